"""A user's recorder is keyed by a digest of its code and the module values it reads; a worker whose
module reads another value (a path from __file__, an environment variable on another machine) keyed
its arrays otherwise, and the planning process never found them: every proxy reading it failed with
'did not record' and every rerun trained again. The job carries the planned keys; the worker refuses
to train under other ones (digestattack27)."""

from __future__ import annotations

from harness.jobs import DataSource, Job, run_job
from harness.recipe import Recipe
from harness.recorders import RecorderRequest
from harness.runspec import DataSpec, RunSpec


def _job(keys: tuple[str, ...]) -> Job:
    return Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(epochs=1), 0),), requests=(RecorderRequest.of("train_loss"),),
               engine="single", source=DataSource("digits"), imports=("json",), keys=keys)


def test_a_worker_whose_recorder_keys_differ_refuses_before_training() -> None:
    """Each run of the job fails with the one line (not an exception: a worker printed its traceback)."""
    job = _job(("train_loss@code-0123",))
    result = run_job(job)
    assert not result.outputs and set(result.failures) == set(job.specs)
    assert "recorder keys differ on this worker (train_loss here, train_loss@code-0123 where it was planned)" in \
        result.failures[job.specs[0]]


def test_a_worker_with_the_planned_keys_trains() -> None:
    result = run_job(_job(("train_loss",)))
    assert not result.failures and len(result.outputs) == 1
