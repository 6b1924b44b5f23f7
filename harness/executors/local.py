"""`--executor local` (the default): a pool of worker processes on this machine.

Why a pool and not threads in one process: torch's intra-op threads oversubscribe as soon as other
work shares the CPUs (every parallel region waits for its parked thread; a digits step went from
~1 ms to 64 ms under load), while one-thread workers degrade gracefully and add up. So each worker
runs `--threads` torch threads (default 1) and the pool has at most as many workers as this process
may use CPUs (`usable_cpus`: affinity and cgroup quota) divided by that, unless `--workers` says
otherwise. The driver trains nothing: it hands out jobs, stores results and writes outputs.

Workers are fresh interpreters (`python -m harness.executors.worker`), never forks of the driver:
forking a process whose torch has started threads is unsafe, and a fresh interpreter gets its thread
variables before torch loads. They live as long as the executor (across `run` calls, keeping their
per-process dataset caches) and are stopped by `close` (also after Ctrl-C, or the SIGTERM or SIGHUP the
CLI handles alike), with what their jobs started in their process groups, or by the driver's death.
Results come over a socket per worker that the driver reads without ever waiting on it (`channel`):
a worker frozen half-way through a message is a job that has sent nothing yet.

A job whose worker dies (killed, out of memory) is retried once on a new worker, then reported as
failed, as under Ray; an exception inside a job is reported, not retried. A job still running
`--job-timeout` seconds after it was handed to its (ready) worker has that worker killed (SIGKILL: a
stopped or deadlocked process may ignore anything else) and replaced, and is reported failed, not
retried: a hang would repeat. Its result, if it arrived by then, is kept. Workers share this
machine's file system, so single runs checkpoint into the run store and resume from it.

On Ctrl-C the results that had finished are not dropped with the workers: `take_finished` hands the
driver the result it was storing and every one already sent down a pipe, read without waiting for a
job still training, so it stores them before it stops (hours of training were lost otherwise).
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from harness.executors import register_executor
from harness.executors.base import (
    Executor,
    JobFn,
    Outcome,
    WorkersLost,
    check_workers,
    describe_exit,
    progress_bar,
    timed_out,
    warn_if_oversubscribed,
)
from harness.executors.channel import Channel
from harness.executors.cpus import usable_cpus
from harness.executors.local_hold import interrupt_after
from harness.executors.local_schedule import RunSchedule
from harness.executors.local_watch import POLL_S as POLL_S
from harness.executors.local_watch import _exited, _late, _overdue, _readable, _sent, _Worker
from harness.option_checks import check_seconds
from harness.values import MAX_THREADS, check_integer

if TYPE_CHECKING:
    from harness.config import ExperimentConfig
    from harness.jobs import Job

#: Seconds stopped workers get to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 2.0
#: Workers in a row that die before they are ready: then the pool cannot start at all.
START_FAILURES = 2
#: Under --job-timeout, the least seconds a worker may take to get ready (torch's import and the warm-up: ~7 s, 20 s
#: on a loaded 2-core machine); a longer --job-timeout is the limit instead. Past it the start failed (`_late`).
START_FLOOR_S = 120.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def worker_pythonpath(package_root: str) -> str:
    """The workers' PYTHONPATH: the folder holding `harness` first, so a source checkout run
    without installing works, unless that folder is site-packages (a wheel install), which the
    worker's Python reads anyway. On PYTHONPATH it would go before the standard library, and an old
    backport installed there (`pathlib` 1.0.1, `enum34`) would replace the real module in workers."""
    import site
    import sysconfig

    sites = {os.path.realpath(p) for p in (*site.getsitepackages(), site.getusersitepackages(),
                                           sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))}
    own = [] if os.path.realpath(package_root) in sites else [package_root]
    return os.pathsep.join(p for p in (*own, os.environ.get("PYTHONPATH")) if p)


def _checked_sizes(workers: int | None, threads: int) -> tuple[int | None, int]:
    """`workers` and `threads` of a LocalExecutor built in code (a config is checked before): a negative
    worker count started no worker, and the run waited for ever; 0 threads divided by zero."""
    if workers is not None:
        check_integer(workers, "worker count", "LocalExecutor(workers=...)", minimum=1, maximum=MAX_THREADS)
    check_integer(threads, "thread count", "LocalExecutor(threads=...)", minimum=1, maximum=MAX_THREADS)
    return workers, threads


def default_workers(threads: int, gpus_per_job: float = 0.0, cpus: int | None = None) -> int:
    """Workers that keep the usable CPUs busy without oversubscribing them: CPUs // threads, at
    least 1; on a GPU also at most 1 / (GPU share of a job), as they all share one device."""
    workers = max(1, (usable_cpus() if cpus is None else cpus) // threads)
    if gpus_per_job > 0:
        workers = min(workers, max(1, math.floor(1 / gpus_per_job + 1e-9)))
    return workers


@register_executor
class LocalExecutor(Executor):
    name = "local"
    description = "a pool of worker processes on this machine, --threads torch threads each (the default)"
    options = ("workers", "job_timeout")

    def __init__(self, workers: int | None = None, threads: int = 1, progress: bool = True,
                 fn: JobFn | None = None, job_timeout: float | None = None) -> None:
        self.workers, self.threads = _checked_sizes(workers, threads)
        check_seconds(job_timeout, "LocalExecutor(job_timeout=...)")
        self.job_timeout = job_timeout  # seconds a job may run (None: no limit)
        self.progress = progress
        self.fn = fn  # None: harness.jobs.run_job; else a picklable callable the workers can import
        self._pool: list[_Worker] = []
        self._failed_starts = 0
        self._finished: list[Outcome] = []  # received, not yet taken by the consumer (the first: handed out)
        weakref.finalize(self, _stop, self._pool)  # at the latest when the executor goes (or at exit)

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        check_workers(cfg)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> LocalExecutor:
        threads = cfg.threads or 1
        cpus = usable_cpus()
        warn_if_oversubscribed(cfg.workers or default_workers(threads, cpus=cpus), threads, cpus)
        return cls(workers=cfg.workers, threads=threads, progress=cfg.progress, job_timeout=cfg.job_timeout)

    def close(self) -> None:
        _stop(self._pool)

    def take_finished(self) -> list[Outcome]:
        """After a `run` iterator closed early (Ctrl-C): the outcomes the consumer may not have stored,
        the last one it was handed and those finished since, so it can store them before it stops."""
        finished, self._finished = self._finished, []
        return finished

    # the pool ---------------------------------------------------------------------------------
    def _slots(self, jobs: Sequence[Job]) -> int:
        if self.workers:
            return self.workers
        return default_workers(self.threads, max(job.num_gpus for job in jobs))

    def _start(self, warm: object = None) -> None:
        """A new worker; `warm`: the data source it loads before it is ready (`worker.warm_up`)."""
        worker = _spawn(self.threads)
        worker.started = time.monotonic()  # the clock of its start (`_late`), until it gets a job
        self._pool.append(worker)
        with suppress(OSError):  # it died at once (a kill, no memory): the pool sees it end before it is ready
            worker.conn.send((list(sys.path), self.threads, pickle.dumps(self.fn) if self.fn is not None else None,
                              warm))

    def _gone(self, worker: _Worker, late: float | None = None) -> str:
        """Remove a dead worker, or kill one not ready `late` seconds after its start; how it ended."""
        if late is not None:  # killed while in the pool: a Ctrl-C here still leaves it to `close`
            with suppress(OSError):
                worker.proc.kill()  # at once: a stopped (SIGSTOP) process acts on SIGTERM only once continued
        self._pool.remove(worker)
        _stop([worker])
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= START_FAILURES:
                raise WorkersLost(_no_start(worker.proc.returncode, late))
        return describe_exit(worker.proc.returncode)

    def _ready(self, worker: _Worker) -> None:
        """A worker answered READY: the pool can start, so the count of failed starts begins again."""
        worker.ready = True
        self._failed_starts = 0

    # running jobs -------------------------------------------------------------------------------
    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        jobs = list(jobs)
        if not jobs:
            return
        schedule = RunSchedule(jobs, self._gone, self._ready)
        slots = self._slots(jobs)
        warm = getattr(jobs[0], "source", None) if self.job_timeout else None  # off the jobs' clocks
        starting = None if self.job_timeout is None else max(self.job_timeout, START_FLOOR_S)  # `_late`
        left = len(jobs)
        finished = False
        self._finished = []
        try:
            with progress_bar(len(jobs), self.progress) as bar:
                while left:
                    while len(self._pool) < min(slots, left):
                        self._start(warm)
                    for worker in list(self._pool):
                        if worker.ready and worker.job is None and schedule.queue:
                            schedule.hand_out(worker)
                    bar.set_postfix(running=sum(w.job is not None for w in self._pool))
                    for worker in _readable(self._pool, self.job_timeout):
                        with interrupt_after():  # a result read and dropped by a Ctrl-C was trained again
                            index, outcome = schedule.receive(worker)
                            if outcome is not None:
                                self._finished.append((jobs[index], outcome))
                    for worker in _overdue(self._pool, self.job_timeout):
                        with interrupt_after():  # killed and not recorded, the job would be lost unreported
                            self._finished.append(_time_out(self._pool, worker, jobs, self.job_timeout))
                    for worker in _late(self._pool, starting):  # else no job is handed out, none times out
                        self._gone(worker, late=starting)
                    while self._finished:
                        left -= 1
                        bar.update()
                        yield self._finished[0]
                        del self._finished[0]  # the consumer asks for the next one: it has stored this one
            finished = True
        finally:  # Ctrl-C, a consumer's error, a closed iterator: stop the jobs still running
            if not finished:
                try:
                    self._finished += _sent(self._pool, jobs)
                finally:
                    self.close()


def _spawn(threads: int) -> _Worker:
    """A worker in a session of its own, printing to stderr (stdout holds the report), and our end of its socket."""
    from harness.jobs import thread_environment

    ours, theirs = socket.socketpair()
    env = {**os.environ, **thread_environment(threads), "PYTHONPATH": worker_pythonpath(_PACKAGE_ROOT)}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.executors.worker", str(theirs.fileno()), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=2, pass_fds=(theirs.fileno(),), env=env, start_new_session=True)
    except OSError as e:
        ours.close()
        raise WorkersLost(f"cannot start a worker process of the local executor ({e.strerror or e}); "
                          "runs already stored are kept") from e
    finally:
        theirs.close()
    return _Worker(proc, Channel(ours))


def _no_start(code: int | None, late: float | None) -> str:
    """Why the pool cannot start workers: the last one ended (`code`), or was not ready `late` s after its start."""
    if late is not None:
        return (f"the local executor's worker processes are not ready within {late:g} s of their start (importing "
                "torch and loading the data, which --job-timeout does not count): stopped or hung; runs already "
                "stored are kept, rerun to resume")
    why = ("a signal from outside, or the kernel's out-of-memory killer" if code is not None and code < 0
           else "see the error above")
    return (f"the local executor's worker processes end before they are ready ({describe_exit(code)}: {why}); "
            "runs already stored are kept, rerun to resume")


def _time_out(pool: list[_Worker], worker: _Worker, jobs: list[Job], limit: float | None) -> Outcome:
    """Kill an overdue worker (the pool starts another) and fail its job, which is not retried."""
    assert worker.job is not None and limit is not None  # `_overdue`'s
    pool.remove(worker)
    with suppress(OSError):
        worker.proc.kill()  # at once: SIGTERM waits in a stopped (SIGSTOP) process until it is continued
    _stop([worker])
    return jobs[worker.job], timed_out(jobs[worker.job], limit, checkpoints=True)


def _stop(workers: list[_Worker]) -> None:
    """Stop workers for good, with what their jobs started in their process groups (a child left behind held
    the driver's stdout and stderr, and whoever read them to their end waited on it): close their pipes (a
    worker exits at EOF), SIGTERM, and SIGKILL what is left after STOP_GRACE_S. Empties the list."""
    stopping = list(workers)
    workers.clear()
    for worker in stopping:
        assert worker.proc.stdin is not None  # started with stdin=PIPE (`_start`)
        for stream in (worker.proc.stdin, worker.conn):
            try:
                stream.close()
            except OSError:
                pass
        _signal_group(worker.proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in stopping:
        while not _exited(worker.proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        _signal_group(worker.proc, signal.SIGKILL)  # the worker if it is left, and its group, before the reap
        worker.proc.wait()


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Signal a worker's process group (`start_new_session`) while it is unreaped: its id names no other."""
    if proc.returncode is None:
        with suppress(OSError):
            os.killpg(proc.pid, signum)
