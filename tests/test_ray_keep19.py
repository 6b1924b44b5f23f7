"""Ctrl-C under Ray keeps the runs whose jobs had finished (review 19): the local pool and the
in-process executor hand them back through `take_finished`, and Ray now does too. Before, Ray's
stop dropped every finished result the driver had not yet been handed, and the rerun trained them
again. Only results that have arrived are taken; nothing waits for a job still running."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from _processes import wait_until

import harness.executors.ray as ray_executor
from harness.executors.ray_jobs import finished_results
from harness.jobs import JobResult
from tests.test_executor_ray import local_ray  # noqa: F401 (a fixture)
from tests.test_interrupt_keep19 import _jobs

ray = pytest.importorskip("ray")


def test_closing_a_ray_run_early_hands_back_the_jobs_that_had_finished(local_ray) -> None:  # noqa: F811
    jobs = _jobs(3)
    executor = ray_executor.RayExecutor(workers=2, progress=False)
    outcomes = executor.run(jobs)
    handed_job, handed = next(outcomes)
    pending = outcomes.gi_frame.f_locals["pending"]  # the refs not yet handed out
    assert wait_until(lambda: len(ray.wait(list(pending), num_returns=len(pending), timeout=0)[0]) == 2, 300)
    outcomes.close()  # what a Ctrl-C in the consumer does
    finished = executor.take_finished()
    assert sorted(job.specs[0].seed for job, _ in finished) == sorted(
        j.specs[0].seed for j in jobs if j is not handed_job)  # before: [] (both dropped)
    for job, outcome in finished:
        assert isinstance(outcome, JobResult) and set(outcome.outputs) == set(job.specs)
    assert executor.take_finished() == []  # taken once


class _FakeRay:
    """`ray.wait`/`ray.get` over named refs: 'ok' refs give their result, 'err' raise as a job error."""

    def __init__(self, ready: list[str]) -> None:
        self.ready, self.timeouts = ready, []

    def wait(self, refs, num_returns, timeout):
        assert timeout == 0  # never waits for a job still running
        return [r for r in refs if r in self.ready], [r for r in refs if r not in self.ready]

    def get(self, ref, timeout):
        self.timeouts.append(timeout)
        if ref.startswith("err"):
            raise RuntimeError("the job raised")
        return f"result of {ref}"


def test_only_arrived_results_are_taken_and_a_job_error_is_left_out() -> None:
    jobs = {name: SimpleNamespace(name=name) for name in ("ok1", "err", "ok2", "running")}
    fake = _FakeRay(["ok1", "err", "ok2"])
    kept = finished_results(fake, jobs)
    assert [(job.name, result) for job, result in kept] == [("ok1", "result of ok1"), ("ok2", "result of ok2")]
    assert all(0 < t <= 10.0 for t in fake.timeouts)  # one deadline for all fetches, none unbounded


def test_a_connection_that_cannot_answer_gives_nothing_and_no_error() -> None:
    class Gone(_FakeRay):
        def wait(self, refs, num_returns, timeout):
            raise ConnectionError("the head is gone")

    assert finished_results(Gone([]), {"a": SimpleNamespace()}) == []
