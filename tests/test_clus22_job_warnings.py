"""A Ray job's warnings reach the driver.

On a node that mounts the store's partial/ read-only, a job sees the run's probe and tries to
checkpoint; each write fails with "warning: cannot write a checkpoint ... training goes on without
it". memprox joins Ray with `log_to_driver=False`, so that warning went to the node's worker log
only (found there, under the node's session logs), and the driver said nothing. The local
executor's workers show theirs on the driver's stderr; a Ray job's now come back with its result.
"""

from __future__ import annotations

import socket
import sys
import warnings
from dataclasses import dataclass

import pytest

from harness.executors import ray_jobs


def _warns(job: object) -> str:
    for _ in range(3):  # every checkpoint of a run refused: one line, not one per epoch
        warnings.warn("cannot write a checkpoint of run-a under /store/partial (Read-only file system)")
    warnings.warn("another warning")
    return "result"


def test_a_jobs_warnings_come_back_with_its_result_each_once() -> None:
    reported = ray_jobs._call_reported(_warns, None, socket.gethostname())  # type: ignore[arg-type]
    assert reported == ray_jobs.Reported("result", ("cannot write a checkpoint of run-a under /store/partial "
                                                    "(Read-only file system)", "another warning"),
                                         socket.gethostname())


def test_the_driver_says_them_naming_another_node(capsys) -> None:
    here = ray_jobs.Reported(1, ("w1",), socket.gethostname())
    there = ray_jobs.Reported(2, ("w2",), "gpu-3")
    assert [ray_jobs.said(here), ray_jobs.said(there), ray_jobs.said(3)] == [1, 2, 3]
    assert capsys.readouterr().err.splitlines() == ["warning: w1", "warning: w2 (on Ray node gpu-3)"]


ray = pytest.importorskip("ray")


@dataclass
class _Job:
    name: str
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def label(self) -> str:
        return self.name


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job and its function travel by value
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_ray_jobs_warning_is_on_the_drivers_stderr(local_ray, capsys) -> None:
    from harness.executors.ray import RayExecutor

    outcomes = list(RayExecutor(progress=False, fn=_warns).run([_Job("j")]))
    assert [outcome for _, outcome in outcomes] == ["result"]
    err = capsys.readouterr().err
    assert "warning: cannot write a checkpoint of run-a under /store/partial (Read-only file system)" in err  # before:
    assert err.count("cannot write a checkpoint") == 1  # not in it
