"""Job code that misbehaves inside a local pool worker: the run is never silently wrong, never
hangs, and names the failing job; the other jobs finish on the pool.

The job functions stand in for a model, a dataset loader or a recorder of a plugin: they run where those
do, in the worker process, between the worker's receipt of a job and its answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
from test_job_timeout20 import _job

from harness.errors import RunFailed
from harness.executors.local import LocalExecutor
from harness.jobs import Job

BIG = 20_000_000  # bytes: far over a socket's buffer


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


# job functions the workers import from this module -------------------------------------------
def fork_and_answer_twice(job: Job) -> str:
    """Seed 0 forks, and both copies return into the worker's loop: the copy's answer comes first."""
    if job.specs[0].seed == 0:
        if os.fork() == 0:
            return "the forked copy"
        time.sleep(1.0)  # the copy answers first (it did, and its answer was the job's)
        return "the worker"
    return "another job"


def leave_a_child(pid_file: str, job: Job) -> int:
    """Start a process that outlives the job (it holds the worker's stdout and stderr)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(pid_file).write_text(str(child.pid))
    return os.getpid()


def close_stderr_and_raise(job: Job) -> int:
    if job.specs[0].seed == 0:
        sys.stderr.close()
        raise ValueError("boom")
    return os.getpid()


def die_once_idle(job: Job) -> int:
    """Seed 0 answers, then its worker is killed (-9) while idle: the driver's next send meets a dead worker."""
    if job.specs[0].seed == 0:
        threading.Timer(0.3, os.kill, (os.getpid(), 9)).start()
    return os.getpid()


def misbehave(job: Job) -> object:
    """One kind of misbehaviour per seed."""
    seed = job.specs[0].seed
    if seed == 0:  # prints, and writes to the standard descriptors directly, then answers with a large result
        print("x" * 100_000)
        os.write(1, b"y" * 100_000)
        os.write(2, b"z" * 100_000)
        return b"r" * BIG
    if seed == 1:
        sys.exit(3)
    if seed == 2:
        os._exit(7)
    if seed == 3:
        raise Unpicklable()
    if seed == 4:  # closes stdin and stdout and answers; the worker goes on
        os.close(0)
        os.close(1)
        return "closed"
    return "fine"


def _alive(pid: int) -> bool:
    """Running, not a zombie (a child reparented to a PID 1 that does not reap stays one)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _run(fn: object, seeds: range, workers: int = 1) -> list[tuple[int, object]]:
    executor = LocalExecutor(workers=workers, progress=False, fn=fn)  # type: ignore[arg-type]
    try:
        return sorted(((job.specs[0].seed, outcome) for job, outcome in executor.run([_job(s) for s in seeds])),
                      key=lambda pair: pair[0])
    finally:
        executor.close()


# fixed in December 2026 ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_copy_forked_by_a_job_neither_answers_nor_takes_jobs() -> None:
    outcomes = _run(fork_and_answer_twice, range(3))
    assert outcomes == [(0, "the worker"), (1, "another job"), (2, "another job")]


@pytest.mark.timeout(120)
def test_a_child_a_job_left_behind_is_stopped_with_the_pool(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    try:
        outcomes = _run(partial(leave_a_child, str(pid_file)), range(1))
        child = int(pid_file.read_text())
        assert isinstance(outcomes[0][1], int)
        assert not _alive(child)
    finally:
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)


@pytest.mark.timeout(120)
def test_a_job_that_closed_stderr_and_raised_reports_its_error_not_a_dead_worker() -> None:
    (seed, error), (_, other) = _run(close_stderr_and_raise, range(2))
    assert isinstance(error, ValueError) and str(error) == "boom"  # was: its worker died 2 times (exit code 1)
    assert isinstance(other, int)


@pytest.mark.timeout(120)
def test_a_worker_killed_before_its_next_job_is_replaced_and_the_job_runs() -> None:
    executor = LocalExecutor(workers=1, progress=False, fn=die_once_idle)
    outcomes = []
    try:
        for job, outcome in executor.run([_job(0), _job(1)]):
            outcomes.append((job.specs[0].seed, outcome))
            time.sleep(1.5)  # the worker is killed meanwhile (the send to it raised BrokenPipeError out of run)
    finally:
        executor.close()
    (first, killed), (second, pid) = outcomes
    assert (first, second) == (0, 1) and isinstance(pid, int) and pid != killed


# held already, kept ---------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_misbehaving_jobs_fail_alone_named_and_the_others_are_exact(capfd) -> None:
    outcomes = dict(_run(misbehave, range(6), workers=2))
    capfd.readouterr()
    assert outcomes[0] == b"r" * BIG
    assert isinstance(outcomes[1], RuntimeError) and str(outcomes[1]) == "SystemExit: 3"
    assert isinstance(outcomes[2], RunFailed)
    assert str(outcomes[2]) == (f"job {_job(2).label()}: its worker died 2 times (exit code 7); the runs of this "
                                "job are not stored")
    assert isinstance(outcomes[3], RuntimeError) and str(outcomes[3]) == "Unpicklable: holds a lock"
    assert outcomes[4] == "closed" and outcomes[5] == "fine"


class SilentError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


class ExitWhenPickled:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise SystemExit(5)


def raise_or_return_oddities(job: Job) -> object:
    if job.specs[0].seed == 0:
        raise SilentError()
    if job.specs[0].seed == 1:
        return ExitWhenPickled()
    return "fine"


@pytest.mark.timeout(120)
def test_an_error_without_words_and_a_result_that_exits_when_pickled_are_named_failures() -> None:
    """An exception whose str() raises reached the driver as it was (its failure line then raised there);
    a result whose pickling raised SystemExit ended the worker (twice: 'its worker died 2 times')."""
    outcomes = dict(_run(raise_or_return_oddities, range(3)))
    assert isinstance(outcomes[0], RuntimeError)
    assert str(outcomes[0]) == "SilentError: <its message could not be read: RuntimeError>"
    assert isinstance(outcomes[1], RuntimeError)
    assert str(outcomes[1]) == "the job's result could not be sent back: 5"
    assert outcomes[2] == "fine"
