"""Two experiments on one shared machine, as the local pool sizes itself (session 28's user journey).

- A user's OMP_NUM_THREADS / MKL_NUM_THREADS / OPENBLAS_NUM_THREADS never reach the workers: each runs
  `--threads` torch threads and those variables set to it, so a shell with OMP_NUM_THREADS=4 cannot make
  a 2-core pool of two workers run 8 threads.
- Two pools at once do not coordinate: each takes the CPUs this process may use (affinity, cgroup quota)
  for itself, so two default experiments on 2 CPUs run 4 one-thread workers. What docs/executors.md says
  ("Two experiments at once"); a pool that took another's workers into account would fail the count here.

Workers are found by an environment mark this test gives them (`tests/test_local_pool.py`'s way): the test
never looks at, or kills, a process it did not start.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import torch
from _processes import live_with_env

from harness.executors import local as local_executor
from harness.executors.local import LocalExecutor
from harness.jobs import DataSource, Job
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec

MARK = "MEMPROX_TEST_SHARED28"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def probe(job: Job) -> tuple[int, int, int, tuple[str | None, ...]]:
    """What a worker trains with: its pid, torch intra- and inter-op threads, the thread variables."""
    return os.getpid(), torch.get_num_threads(), torch.get_num_interop_threads(), \
        tuple(os.environ.get(v) for v in THREAD_VARIABLES)


def _job(seed: int) -> Job:
    return Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), seed),), requests=(), engine="single",
               source=DataSource("digits"))


def _workers(mark: str) -> list[int]:
    found = []
    for pid in live_with_env(f"{MARK}={mark}"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"harness.executors.worker" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


@pytest.fixture
def mark(monkeypatch: pytest.MonkeyPatch) -> str:
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARK, value)
    yield value
    for pid in live_with_env(f"{MARK}={value}"):  # whatever a failed test left
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.parametrize("threads", [1, 2])
def test_a_users_thread_variables_never_reach_the_workers(mark, monkeypatch, threads) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "4")
    executor = LocalExecutor(workers=1, threads=threads, progress=False, fn=probe)
    try:
        outcomes = [outcome for _, outcome in executor.run([_job(0), _job(1)])]
    finally:
        executor.close()
    assert {o[1:] for o in outcomes} == {(threads, threads, (str(threads),) * 3)}
    assert _workers(mark) == []


def test_two_pools_at_once_each_take_every_usable_cpu(mark, monkeypatch) -> None:
    monkeypatch.setattr(local_executor, "usable_cpus", lambda: 2)  # what the driver's `_slots` reads
    first, second = (LocalExecutor(progress=False, fn=probe) for _ in range(2))
    try:
        pids = [{o[0] for _, o in pool.run([_job(s) for s in range(4)])} for pool in (first, second)]
        alive = _workers(mark)  # workers live as long as their executor: both pools are still up
    finally:
        first.close()
        second.close()
    assert [len(p) <= 2 for p in pids] == [True, True] and not pids[0] & pids[1]
    assert len(alive) == 4, alive  # 2 per pool, 4 on 2 CPUs: the pools do not know of each other
    assert _workers(mark) == []
