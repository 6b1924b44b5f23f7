"""--job-timeout under Ray (issue 20): a job past its limit is cancelled (`ray.cancel(force=True)`
kills its worker, stopped or asleep) and reported failed, while the other jobs finish. The clock of a
job starts when it marks its start in Ray's key-value store, not when it is queued. On a local Ray of
2 CPUs started by the fixture, as in test_executor_ray; skipped without Ray."""

from __future__ import annotations

import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from _processes import wait_until

from harness.errors import RunFailed
from harness.jobs import Job
from tests.test_job_timeout20 import _alive, _job

ray = pytest.importorskip("ray")

from harness.executors.ray import RayExecutor  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this module
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if started:
        ray.shutdown()


def hang_by_seed(folder: str, job: Job) -> int:
    """Seed 0 stops its worker (SIGSTOP), seed 1 sleeps for good, the others return at once; every
    attempt leaves a file named after its seed and process."""
    seed = job.specs[0].seed
    Path(folder, f"{seed}-{os.getpid()}").touch()
    if seed == 0:
        os.kill(os.getpid(), signal.SIGSTOP)
    if seed == 1:
        time.sleep(3600)
    return os.getpid()


@pytest.mark.timeout(300)
def test_hung_ray_jobs_are_cancelled_and_the_others_finish(local_ray, tmp_path) -> None:
    """Four jobs on two CPUs: Ray starts them in turn, so the quick ones wait in its queue while the hung
    ones run, and are not timed there (a clock from submission would have stopped them too). Each hung
    job ran once: a cancelled job is not retried."""
    executor = RayExecutor(workers=2, progress=False, fn=partial(hang_by_seed, str(tmp_path)), job_timeout=2.0)
    jobs = [_job(seed) for seed in range(4)]
    outcomes = {job.specs[0].seed: outcome for job, outcome in executor.run(jobs)}
    for seed in (0, 1):
        assert isinstance(outcomes[seed], RunFailed), outcomes[seed]
        assert str(outcomes[seed]).startswith(f"job {jobs[seed].label()}: stopped after 2 s, its --job-timeout, "
                                              "and not retried (a hang would repeat)")
    assert all(isinstance(outcomes[seed], int) for seed in (2, 3))
    hung = {int(p.name.split("-")[1]) for p in tmp_path.iterdir() if p.name.split("-")[0] in ("0", "1")}
    assert len(hung) == 2
    assert wait_until(lambda: not any(map(_alive, hung)), 30)  # their workers were killed
