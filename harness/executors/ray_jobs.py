"""The Ray executor's remote side (see `harness.executors.ray`): the task each job runs as, how a
job's failure reads on the driver, and how a job on a Ray connection the caller made is asked to
stop. Imported by Ray's workers by reference, so it stays small."""

from __future__ import annotations

import _thread
import dataclasses
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from harness.errors import RunFailed
from harness.executors.ray_probe import sees_probe
from harness.executors.ray_same_code import missing_module
from harness.executors.ray_timeout import JobClocks, mark_started
from harness.executors.worker import portable, with_notes
from harness.resuming import is_resuming

if TYPE_CHECKING:
    from ray.exceptions import RayTaskError

    from harness.executors.base import JobFn
    from harness.jobs import Job


#: Ray's key-value store (the GCS) namespace of the stop requests, how often a job looks, how long
#: one look may wait for the head, and how long an interrupted job may take to end before its
#: worker process is killed.
STOP_NAMESPACE = "memprox"
STOP_POLL_S = 0.5
STOP_READ_S = 2.0
STOP_GRACE_S = 5.0


def _call(fn: JobFn, job: Job, driver: str = "", stop_key: str | None = None, start_key: str | None = None,
          probe: str | None = None):
    """The remote task: `fn` travels as an argument, so any picklable callable (a partial) works.
    A SystemExit from the job's code becomes the job's failure: Ray would take it for a crashed
    worker, retry the job and report a dead worker (KeyboardInterrupt is Ray's cancellation). A
    failure on another machine than the driver's (`driver`: its host name) names that node. With
    `stop_key` the job stops itself once the driver sets that key (`ask_to_stop`); with `start_key` it
    marks its start, which starts its --job-timeout clock (`ray_timeout`). It checkpoints only where
    it sees the driver's probe of token `probe` in the store (`ray_probe`)."""
    mark_started(start_key)  # first: the check below reads the store, which may hang (an NFS mount)
    try:
        with _stops_on(stop_key):
            return fn(_checkpoints_if_seen(job, probe))
    except SystemExit as e:
        raise _on_node(portable(e), driver, job) from None
    except Exception as e:
        sent = portable(e)  # one Ray cannot pickle reached the driver as a dead worker's (UnserializableException)
        failed = _on_node(sent, driver, job)
        if failed is e:  # the driver's own machine: the job's exception as it is
            raise
        raise failed from (e if sent is e else None)


@dataclasses.dataclass(frozen=True)
class Reported:
    """A job's result with the warnings it gave on its worker (each text once), the worker's host, and
    the lines saying a run resumed from its checkpoint: memprox joins Ray with `log_to_driver=False`, so
    these went to that node's worker log, out of sight (a read-only partial/ refusing every checkpoint
    said so there only; a rerun after a kill counted "N resumed" without naming a run or an epoch). The
    driver says them (`said`), as the job's result arrives."""

    result: Any
    warnings: tuple[str, ...]
    node: str
    resumed: tuple[str, ...] = ()


def _call_reported(fn: JobFn, job: Job, driver: str = "", stop_key: str | None = None,
                   start_key: str | None = None, probe: str | None = None) -> Reported:
    """Ray's task: `_call`, its warnings and resuming lines brought back with its result (a job that
    raises reports neither)."""
    with warnings.catch_warnings(record=True) as caught, _resumes_kept() as resumed:
        result = _call(fn, job, driver, stop_key, start_key, probe)
    return Reported(result, tuple(dict.fromkeys(str(w.message) for w in caught)), socket.gethostname(),
                    tuple(resumed))


def said(outcome: Any) -> Any:
    """The driver's side of `Reported`: its resuming lines and warnings on stderr, as the local
    executor's workers show theirs, naming the node where it is not this machine; the job's result.
    Anything else as it is."""
    if not isinstance(outcome, Reported):
        return outcome
    where = "" if outcome.node == socket.gethostname() else f" (on Ray node {outcome.node})"
    for line in outcome.resumed:
        print(f"{line}{where}", file=sys.stderr)
    for text in outcome.warnings:
        print(f"warning: {text}{where}", file=sys.stderr)
    return outcome.result


#: The most of one line kept while it is written: its start, which is what `is_resuming` matches.
MAX_LINE = 100_000


class _ResumesKept:
    """A job's sys.stderr, written through, keeping each line that says a run resumed."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.line = stream, ""
        self.kept: list[str] = []

    def write(self, text: str) -> int:
        *ended, rest = text.split("\n")
        for i, part in enumerate(ended):
            self.end(self.line + part if i == 0 else part)
        self.line = ((self.line if not ended else "") + rest)[:MAX_LINE]
        return self.stream.write(text)

    def end(self, line: str) -> None:
        if is_resuming(line):  # the wording of `harness.resuming`, which the lines are written in
            self.kept.append(line.rstrip("\r"))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...: the stream's
        return getattr(self.stream, name)


@contextmanager
def _resumes_kept() -> Iterator[list[str]]:
    """The resuming lines the job prints on stderr in the block (`print(..., file=sys.stderr)` finds
    the stand-in); they still reach the worker's log."""
    saved = sys.stderr
    kept = _ResumesKept(saved)
    sys.stderr = kept
    try:
        yield kept.kept
    finally:
        sys.stderr = saved
        kept.end(kept.line)  # a last line without its newline


def submit(ray: Any, fn: JobFn, jobs: Sequence[Job], stop_key: str | None,
           clocks: JobClocks | None, probe: str | None = None) -> dict[Any, Job]:
    """Hand every job to Ray, which queues it until a worker is free: each reserves its CPUs and GPUs, a
    dead worker's job is retried MAX_RETRIES times, an exception is not retried. ref -> job. `probe`:
    the token of the run's store probe (None: none written, no job checkpoints)."""
    from harness.executors.base import MAX_RETRIES

    remote, shared_fn, driver = ray.remote(_call_reported), ray.put(fn), socket.gethostname()
    refs = [remote.options(num_cpus=job.num_cpus, num_gpus=job.num_gpus, max_retries=MAX_RETRIES,
                           retry_exceptions=False, name=job.label()[:100]).remote(
                shared_fn, job, driver, stop_key, clocks.key(i) if clocks else None, probe)
            for i, job in enumerate(jobs)]
    if clocks is not None:
        clocks.refs = refs
    return dict(zip(refs, jobs))


def _checkpoints_if_seen(job: Job, probe: str | None) -> Job:
    """`job` without its checkpoint folder unless this node sees the driver's probe there: a node that
    does not (its own disk at the store's path, no such path) would write checkpoints the driver never
    clears nor counts, and a later run placed on it would resume from one. Checked on the node, as the
    job starts (an autoscaler's node that joined after planning is checked like any other)."""
    root = getattr(job, "checkpoint_root", None)
    if root and not (probe and sees_probe(root, probe)):
        return dataclasses.replace(job, checkpoint_root=None)
    return job


def new_stop_key() -> str:
    """A stop key of one run alone: random, so that a key left in Ray's store (a driver killed while
    its jobs were stopping deletes nothing) can never stop the jobs of a later run."""
    return f"stop-{secrets.token_hex(8)}"


def ask_to_stop(stop_key: str) -> None:
    """The driver's side: ask the jobs given `stop_key` to stop. Used instead of `ray.cancel` on a
    connection the caller made (memprox cannot leave it): a cancel racing a job that has just
    finished aborts the driver (ray-project/ray#54846), force or not (the race is in the driver's
    task bookkeeping, before `force` matters); a key in Ray's store touches no task of the driver.
    The key must stay until every job given it has ended (`forget_stop`): a job still queued, or
    Ray's retry of one whose worker was killed, would otherwise start."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(stop_key, b"1", namespace=STOP_NAMESPACE)


def forget_stop(stop_key: str) -> None:
    """The driver's side, once every job given `stop_key` has ended: delete the key `ask_to_stop`
    set (this run's own, `new_stop_key`), so that a stopped run leaves nothing in Ray's store."""
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(stop_key, namespace=STOP_NAMESPACE)


def _stop_asked(stop_key: str) -> bool:
    """Whether the driver has asked. A head that does not answer (within STOP_READ_S) reads as "not
    asked": its error failed a job as it started, and ended a running job's watcher for good (the job
    could then no longer be stopped); the watcher looks again STOP_POLL_S later, so a stop is seen at
    the first look the head answers. Without a timeout Ray's read of a stopped head had not returned
    after 20 s here; with one it raised RpcError in time, for a stopped head as for a killed one."""
    from ray.exceptions import RpcError

    try:
        return _read_stop(stop_key)
    except (RpcError, OSError):
        return False


def _read_stop(stop_key: str) -> bool:
    from ray.experimental.internal_kv import internal_kv_get_gcs_client

    value = internal_kv_get_gcs_client().internal_kv_get(stop_key.encode(), STOP_NAMESPACE.encode(),
                                                         timeout=STOP_READ_S)
    return bool(value)


@contextmanager
def _stops_on(stop_key: str | None) -> Iterator[None]:
    """Run the job, raising KeyboardInterrupt in it once the driver asks (`ask_to_stop`): at once
    for a job that starts after the request, within STOP_POLL_S for a running one, at its next
    Python step (as Ray's own `ray.cancel(force=False)`: the job fails with TaskCancelledError,
    its worker is kept). A job still running STOP_GRACE_S later (one long sleep or C call: a
    SIGINT sent to the worker's main thread did not wake a sleep here; or a worker that ignores
    SIGINT, as one a `nohup`'d `ray start` began) has its worker killed: Ray retries the job once,
    and the retry stops at its start."""
    if stop_key is None:
        yield
        return
    if _stop_asked(stop_key):
        raise KeyboardInterrupt
    ended = threading.Lock()  # taken by the job as it ends, for good; by the watcher while it interrupts
    done = threading.Event()  # wakes the watcher
    watcher = threading.Thread(target=_watch, args=(stop_key, ended, done), name="memprox-stop-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        # one C call: the job has ended before an interrupt sent meanwhile can surface, which it
        # then does here, in the task, at the latest at the Python call below (not in Ray's loop)
        ended.acquire()
        done.set()


def _watch(stop_key: str, ended: threading.Lock, done: threading.Event) -> None:
    """The watcher of `_stops_on`: it interrupts the job only while holding `ended`, which the job
    takes as it ends (an interrupt after the job would land in Ray's worker loop), and kills the
    worker only if the job has still not taken it STOP_GRACE_S later (the worker may be running
    its next task by then: `done` may go unset, the interrupt surfacing in its `set`)."""
    while not done.wait(STOP_POLL_S) and not ended.locked():
        if _stop_asked(stop_key):
            if not ended.acquire(blocking=False):
                return  # the job has ended
            try:
                _thread.interrupt_main()
            finally:
                ended.release()
            if not done.wait(STOP_GRACE_S) and not ended.locked():
                _kill_worker()
            return


def _kill_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _on_node(error: Exception, driver: str, job: Job) -> Exception:
    """`error`, or where this is not the driver's machine a new failure naming the node: "folder
    /data/c10 does not exist" sent the user to a folder that exists where memprox runs. It names the
    job too, as the runner does for any other failure (a RunFailed's text is reported as it is)."""
    node = socket.gethostname()
    if driver in ("", node):
        return error
    text = str(error) or type(error).__name__
    # a RunFailed names its run already (`run L [digest]: ...`, as the runner reports it): it read "job L: run L ..."
    named = isinstance(error, RunFailed) or text.startswith(f"job {job.label()}:")
    return with_notes(RunFailed(f"{'' if named else f'job {job.label()}: '}{text} (raised on Ray node {node}, "
                                f"not on {driver} where memprox runs)"), error)


def _job_error(error: RayTaskError) -> BaseException:
    """The exception a job raised, as the local executor reports it: the exception itself, its
    traceback on stderr. Ray's wrapper reads as the worker's whole traceback in terminal colours,
    which would become the run's failure line (on screen and in summary.json)."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, Exception):  # e.g. a cause Ray could not unpickle: keep Ray's text
        return error.as_instanceof_cause() if hasattr(error, "as_instanceof_cause") else error
    if missing_module(cause):  # a node without memprox: `check_outcome` says it in one line, no traceback
        return cause
    trace = getattr(error, "traceback_str", "") or str(error)
    print(re.sub(r"\x1b\[[0-9;]*m", "", trace), file=sys.stderr)  # without Ray's colour codes
    return cause


#: Seconds a Ctrl-C waits to fetch the results of jobs that had already finished (from other nodes'
#: object stores): long enough for a run's arrays, short enough not to hold up the stop.
FETCH_FINISHED_S = 10.0


def finished_results(ray: Any, pending: Mapping[Any, Job]) -> list[tuple[Job, Any]]:
    """On Ctrl-C, before the outstanding jobs are stopped: the results of those that had already
    finished, so the driver stores them instead of the rerun training them again. Only results
    that have arrived (`ray.wait` with no timeout); a job that raised, or a fetch that does not
    complete in FETCH_FINISHED_S, is left out: nothing waits for a job still running."""
    try:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
    except Exception:  # the head or the driver's connection is gone: nothing can be fetched
        return []
    kept: list[tuple[Job, Any]] = []
    deadline = time.monotonic() + FETCH_FINISHED_S  # for all of them: a hung cluster holds up each get
    for ref in ready:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            kept.append((pending[ref], said(ray.get(ref, timeout=left))))
        except Exception:  # a job error, a lost object, a timeout: that run is trained again
            continue
    return kept

