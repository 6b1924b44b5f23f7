"""Running the plan: claim each pending run's store entry, train what is still missing through the
executor, and put every result in the store as it arrives.

Each pending spec is claimed with its entry's lock, without waiting; a spec another process holds
is left to it, and once that process lets go it is read back (or, if it failed there, claimed
again). No lock is ever awaited while others are held, so processes cannot deadlock.

Ctrl-C stores the runs that had finished before it stops (the one being stored, and those a worker
finished meanwhile, from the executor's `take_finished`): a rerun would train them again. It waits for
no job still training, and a second Ctrl-C stops at once; each entry is written atomically.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from filelock import BaseFileLock

from harness.errors import Interrupted, RunFailed, StorageError
from harness.executors import Executor
from harness.executors.base import Outcome
from harness.io import lock_failure
from harness.jobs import Job, JobResult, Pending
from harness.recorders import RECORDERS, RecorderRequest
from harness.recorders.bank import RECORDER_NOTE
from harness.runspec import RunSpec
from harness.store import RunStore, StoredRun


@dataclass
class RunnerResult:
    """Every run the plan needs that is in the store now, and how each got there."""

    runs: dict[RunSpec, StoredRun] = field(default_factory=dict)
    failed: dict[RunSpec, str] = field(default_factory=dict)  # spec -> why it failed
    trained: list[str] = field(default_factory=list)  # labels trained by this process
    reused: list[str] = field(default_factory=list)  # labels read from the store
    resumed: dict[str, int] = field(default_factory=dict)  # label -> epoch, of the trained runs a checkpoint resumed


class Runner:
    """Trains the pending runs of a plan (`wanted`: spec -> the recorders it must carry) into `store`,
    `jobs` turning claimed specs into executor jobs."""

    def __init__(self, store: RunStore, executor: Executor, wanted: dict[RunSpec, set[RecorderRequest]],
                 jobs: Callable[[Pending], list[Job]]) -> None:
        self.store, self.executor, self.wanted, self.jobs = store, executor, wanted, jobs

    def run(self, done: dict[RunSpec, StoredRun], todo: Pending) -> RunnerResult:
        """Train what the store lacks (`todo`; `done` is already stored) and store it. Raises
        Interrupted on Ctrl-C and StorageError when a store write fails; either way every run
        already stored stays, no lock is left held and the executor's workers are stopped."""
        result = RunnerResult(runs=dict(done), reused=[spec.label() for spec in done])
        try:
            self.store.require_writable([spec.label() for spec, _ in todo])  # a read-only store: before training
            if todo:  # a Ray cluster that cannot be joined left an empty store behind
                self.executor.start()
            self.store.create()
            while todo:
                waiting = self._train_claimed(todo, result)
                todo, told = [], False
                for i, (spec, requests) in enumerate(waiting):  # those before `i` are read back: not waited for
                    lock = self.store.lock(spec)
                    told = _wait_for(lock, len(waiting) - i, told)
                    try:
                        if (still := self._still_needed(spec, requests, result)) is not None:
                            todo.append((spec, still))
                    finally:
                        lock.release()
        except KeyboardInterrupt:
            partly = sum(self._resumable(spec) for spec in self.wanted if spec not in result.runs)
            raise Interrupted(len(result.runs), partly) from None
        finally:
            self.executor.close()  # training is over: the workers' memory goes back before evaluation
        return result

    def _resumable(self, spec: RunSpec) -> bool:
        """Whether a checkpoint of `spec` waits for a rerun: not one another process is training from now
        (it holds the entry's lock). An experiment stopped while it waited for that process counted the other's
        live checkpoint as 'partly trained run checkpointed' of its own, having trained nothing."""
        if not os.path.isfile(self.store.checkpoint_path(spec)):
            return False
        lock = self.store.lock(spec)
        try:
            lock.acquire(timeout=0)
        except TimeoutError:
            return False
        except OSError:  # cannot tell: counted, as before
            return True
        lock.release()
        return True

    def _still_needed(self, spec: RunSpec, requests: set[RecorderRequest], result: RunnerResult
                      ) -> set[RecorderRequest] | None:
        """None when the store holds `spec` with every wanted recorder now (it is reused); else the
        recorders to train it with: `requests` and those of an entry stored since it was planned.
        Another experiment that needed other recorders may have stored it meanwhile: training only
        `requests` replaced its entry by one without its recorders, so that experiment failed reading
        them ("removed or damaged while in use") and the next one needing them trained the run again."""
        stored = self.store.get(spec)
        if stored is not None and {r.key for r in self.wanted[spec]} <= stored.recorders:
            result.runs[spec] = stored
            result.reused.append(spec.label())
            return None
        return set(requests) | recorded(stored)

    def _train_claimed(self, pending: Pending, result: RunnerResult) -> Pending:
        """Claim (lock), train and store `pending`; returns the specs another process holds."""
        waiting = []
        with ExitStack() as held:
            claimed = []
            for spec, requests in pending:
                lock = self.store.lock(spec)
                try:
                    _acquire(lock, timeout=0)
                except TimeoutError:
                    waiting.append((spec, requests))
                    continue
                held.callback(lock.release)
                if (still := self._still_needed(spec, requests, result)) is not None:  # stored since we looked?
                    claimed.append((spec, still))
            outcomes = self.executor.run(self.jobs(claimed))
            handed: Outcome | None = None
            try:
                for handed in outcomes:
                    self._store_outcome(*handed, result)
            except KeyboardInterrupt:
                _close(outcomes)  # the workers stop; what they had finished is read first
                self._keep_finished(handed, result)  # while the locks are held
                raise
            finally:
                _close(outcomes)
        return waiting

    def _keep_finished(self, handed: Outcome | None, result: RunnerResult) -> None:
        """On Ctrl-C, store the runs that had finished and are not stored yet: the last outcome handed out
        and those the executor holds (`Executor.take_finished`). A failed write ends this with its line;
        the interrupt goes on either way."""
        finished = [*([handed] if handed is not None else []), *self.executor.take_finished()]
        runs = {spec: run for _, outcome in finished if isinstance(outcome, JobResult)
                for spec, run in outcome.outputs.items() if spec not in result.runs}
        if runs:
            print(f"stopping: storing the {len(runs)} run{'s' if len(runs) != 1 else ''} that had finished first "
                  "(Ctrl-C again stops at once; the rerun then trains them again)", file=sys.stderr)
        try:
            for spec, (arrays, manifest) in runs.items():
                result.runs[spec] = self.store.put(spec, arrays, manifest)
                result.trained.append(spec.label())
        except StorageError as e:
            print(f"error: {e}", file=sys.stderr)

    def _store_outcome(self, job: Job, outcome: JobResult | BaseException, result: RunnerResult) -> None:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            outcome = JobResult(failures={spec: failure_line(job, outcome) for spec in job.specs})
        for spec, message in outcome.failures.items():
            result.failed[spec] = message
            print(f"error: {message}", file=sys.stderr)
        for spec, (arrays, manifest) in outcome.outputs.items():
            result.runs[spec] = self.store.put(spec, arrays, manifest)
            result.trained.append(spec.label())
            if spec in outcome.resumed:
                result.resumed[spec.label()] = outcome.resumed[spec]


def failure_line(job: Job, error: Exception) -> str:
    """An exception a job raised, as its failure line: the job's own failures (RunFailed) and the
    executor's name the run; any other (a plugin recorder's bug, a dataset loader's) said only
    `error: boom`, not which of the experiment's runs it broke."""
    text = str(error) or type(error).__name__
    notes = [n for n in getattr(error, "__notes__", None) or [] if isinstance(n, str) and n.startswith(RECORDER_NOTE)]
    if notes:  # the own-loop tracker's traceback shows the note alone: it has no --proxies to drop a proxy from
        text = (f"{text} ({notes[0]}: a proxy that needs it fails on every run that records it; drop that proxy "
                "from --proxies to score the others)")
    if isinstance(error, RunFailed) or text.startswith(f"job {job.label()}:"):
        return text
    return f"job {job.label()}: {text}"


def recorded(stored: StoredRun | None) -> set[RecorderRequest]:
    """The recorders a stored entry carries, as requests: a run trained again to add recorders keeps
    them (deterministic seeds retrace it). Left out: one stored without its name (before manifests
    kept it), and one not registered in this process (a plugin's, from a script run on the same
    store), which it cannot record: asked for, it stopped the experiment with "unknown recorder"
    (`not_recordable` names them)."""
    if stored is None:
        return set()
    return {RecorderRequest(r.name, tuple(map(tuple, r.params))) for r in stored.manifest.recorders.values()
            if r.name in RECORDERS}


def not_recordable(stored: StoredRun) -> list[str]:
    """The keys of the stored entry's recorders that `recorded` leaves out."""
    return sorted(k for k, r in stored.manifest.recorders.items() if r.name not in RECORDERS)


def _close(outcomes: object) -> None:
    """Close an executor's iterator of outcomes (idempotent): cancels the jobs still outstanding."""
    close = getattr(outcomes, "close", None)
    if close is not None:
        close()


def _wait_for(lock: BaseFileLock, runs: int, told: bool) -> bool:
    """Block until the other process lets `lock` go, saying so once (`told`: said already): a waiting
    experiment printed nothing, for as long as the other's runs took, without end if one hangs. `runs`: this
    one and those after it, not those before it (let go already, and read back): counting them too read
    'waiting for 3' with 2 runs still held."""
    try:
        _acquire(lock, timeout=0)
        return told
    except TimeoutError:
        if not told:
            print(f"waiting for {runs} run(s) another process on this store is training: each is read back when it "
                  "lets go (or trained here, if that process stops first)", file=sys.stderr)
        _acquire(lock)
        return True


def _acquire(lock: BaseFileLock, timeout: float = -1) -> None:
    """`lock.acquire`, with a lock file that cannot be made (a store out of inodes; a group's store whose
    locks folder another member made without group write) as a one-line StorageError naming it and the
    fix, not a traceback. TimeoutError (another process holds it) passes through."""
    try:
        lock.acquire(timeout=timeout)
    except TimeoutError:
        raise
    except OSError as e:
        raise StorageError(lock_failure(lock.lock_file, e)) from e
