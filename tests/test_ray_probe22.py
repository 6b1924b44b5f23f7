"""In-run checkpoints under Ray follow what each job's node sees, on a local Ray of 2 CPUs.

A cluster joined with --ray-address never checkpointed, even where its store sits on a file system
every node mounts: the driver guessed from IP addresses. Now the driver writes a probe into the
store for the run and a job checkpoints where it finds that probe, holding the run's token: here
every "node" sees the store, so a rerun resumes from the first run's checkpoint. A job that does not
find the probe at the store's path (a node with its own disk there: simulated by a probe written
into another folder) neither reads the checkpoint there nor writes one; before, on a Ray the caller
started on one machine, it resumed from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.experiment import Experiment

ray = pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors.ray_probe import NAME, StoreProbe  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def _experiment(make_config, **kw) -> tuple[Experiment, list]:
    """Three epochs, a checkpoint after each but the last: the partial run is at epoch 2."""
    exp = Experiment(make_config(epochs=3, executor="ray", checkpoint_every_s=1e-9, **kw))
    exp.store.create()
    return exp, exp.jobs(exp.pending()[1])


def _run(exp: Experiment, jobs: list):
    ((job, result),) = list(exp.executor.run(jobs))
    assert not isinstance(result, BaseException) and not result.failures, result
    ((spec, (arrays, _)),) = result.outputs.items()
    return spec, arrays, result.resumed


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k][n], b[k][n]) for k in a for n in a[k])


def _probes(exp: Experiment) -> list[str]:
    return [n for n in os.listdir(exp.store.root / "partial") if NAME.fullmatch(n)]


@pytest.mark.timeout(300)
def test_a_joined_cluster_that_sees_the_store_checkpoints_and_a_rerun_resumes(make_config, local_ray) -> None:
    exp, jobs = _experiment(make_config, ray_address=local_ray)  # --ray-address: "another cluster"
    assert [job.checkpoint_root for job in jobs] == [str(exp.store.root)]  # each job decides on its node
    spec, first, resumed = _run(exp, jobs)
    checkpoint = exp.store.checkpoint_path(spec)
    assert resumed == {} and checkpoint.is_file(), "the first run wrote no checkpoint"
    spec, again, resumed = _run(exp, jobs)
    assert resumed == {spec: 2}  # epochs 1-2 came from the checkpoint
    assert _same(first, again)  # and the resumed run's numbers are the uninterrupted run's
    assert _probes(exp) == []  # each run's probe went with it


class _Elsewhere(StoreProbe):
    """The probe written into another folder: the jobs' nodes see a store path without it."""

    folder: Path

    def __init__(self, roots: set[str]) -> None:
        (self.folder / "partial").mkdir(parents=True, exist_ok=True)
        super().__init__({str(self.folder)})


@pytest.mark.timeout(300)
def test_a_job_that_does_not_see_the_probe_neither_reads_nor_writes_a_checkpoint(make_config, local_ray,
                                                                                  monkeypatch, tmp_path) -> None:
    exp, jobs = _experiment(make_config)  # the caller's own Ray on this machine
    spec, first, _ = _run(exp, jobs)
    checkpoint = exp.store.checkpoint_path(spec)
    written = os.stat(checkpoint)  # a checkpoint at epoch 2 of the store's path (on "that node's disk")
    _Elsewhere.folder = tmp_path / "another-disk"
    monkeypatch.setattr(ray_executor, "StoreProbe", _Elsewhere, raising=False)
    spec, again, resumed = _run(exp, jobs)
    assert resumed == {}  # not read: trained from its first epoch
    now = os.stat(checkpoint)
    assert (now.st_ino, now.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not written
    assert _same(first, again)
    assert _probes(exp) == [] and os.listdir(_Elsewhere.folder / "partial") == []
