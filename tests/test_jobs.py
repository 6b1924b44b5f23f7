"""Jobs are self-contained (they pickle, and `run_job` needs nothing from the Experiment), the engine
a spec trains in depends only on the spec and the device type, and the registries refuse clashes."""

from __future__ import annotations

import importlib.metadata
import pickle
import types

import numpy as np
import pytest

from harness.experiment import Experiment
from harness.jobs import run_job
from harness.recorders import EVAL_LAST, RECORDERS, Recorder, register_recorder
from harness.training import train_run


def test_a_job_pickles_and_runs_without_the_experiment(make_config, digits_noisy) -> None:
    exp = Experiment(make_config(epochs=2, proxies="csl,aum"))
    pending = exp.pending()[1]
    (job,) = exp.jobs(pending)
    assert job.engine == "single" and job.source.dataset == "digits" and job.checkpoint_root == str(exp.store.root)
    blob = pickle.dumps(job)
    assert len(blob) < 10_000  # names its data, carries no tensors
    result = run_job(pickle.loads(blob))
    ((spec, (arrays, manifest)),) = result.outputs.items()
    direct = train_run(spec, digits_noisy, list(job.requests), progress=False)
    for key, named in direct.arrays.items():
        for name, arr in named.items():
            np.testing.assert_array_equal(arrays[key][name], arr)  # bit-identical to train_run
    assert manifest.engine == "single" and manifest.threads >= 1 and manifest.train_acc == direct.train_acc
    assert {r.name for r in manifest.recorders.values()} == {"train_loss", "train_margin"}


def test_the_engine_is_chosen_by_the_spec_not_by_its_company(make_config) -> None:
    """A spec on part of the data (a fold) that can be an ensemble member trains as an ensemble even
    when it is the only one pending, and a run on all the data always trains alone, so stored results
    depend neither on what else needed training nor on which proxies were selected."""
    exp = Experiment(make_config(epochs=2, proxies="final_loss,confident_learning"))
    pending = exp.pending()[1]
    base = exp.plan.settings[0][2]
    fold = next(p[0] for p in pending if p[0] != base)
    assert [j.engine for j in exp.jobs([p for p in pending if p[0] == base])] == ["single"]
    fold_alone = exp.jobs([p for p in pending if p[0] == fold])
    assert [j.engine for j in fold_alone] == ["ensemble"] and fold_alone[0].specs == (fold,)
    assert sorted({j.engine for j in exp.jobs(pending)}) == ["ensemble", "single"]
    assert exp.plan.runs[base] == {EVAL_LAST}
    result = exp.run()
    engines = {s: exp.store.get(s).manifest.engine for s in exp.plan.runs}
    assert engines[base] == "single" and {e for s, e in engines.items() if s != base} == {"ensemble"}
    assert not result.failures


def test_recorder_name_clash_is_refused() -> None:
    class Clash(Recorder):
        name = "train_loss"

    with pytest.raises(ValueError, match="already registered"):
        register_recorder(Clash)
    assert RECORDERS["train_loss"] is not Clash


def test_plugin_proxy_with_a_taken_name_warns_and_keeps_the_builtin(monkeypatch) -> None:
    from proxies import Proxy, registry

    class FakeCSL(Proxy):
        name = "csl"
        description = "impostor"
        citation = "nobody"

        def score(self, ctx):
            return np.zeros(len(ctx.labels))

    module = types.ModuleType("fake_clash_module")
    module.FakeCSL = FakeCSL
    monkeypatch.setitem(__import__("sys").modules, "fake_clash_module", module)
    ep = importlib.metadata.EntryPoint("csl", "fake_clash_module:FakeCSL", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points  # other libraries look up their own groups
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(UserWarning, match="fake_clash_module:FakeCSL.*csl.*proxies.csl.CSL"):
        proxies = registry.available_proxies()
    assert proxies["csl"].__module__ == "proxies.csl"


def test_gpu_jobs_reserve_a_fraction_of_a_gpu_on_ray(make_config, monkeypatch) -> None:
    """No GPU here: the resources and device a GPU job would get, checked on the job itself."""
    pytest.importorskip("ray")
    import torch

    from harness.executors import ray as ray_executor
    from harness.executors.ray import RayExecutor

    # a cluster address is checked when the executor is made; no cluster here, so pretend it answers
    monkeypatch.setattr(ray_executor, "check_reachable", lambda address: ("10.0.0.1", 6379))

    exp = Experiment(make_config(epochs=1, gpus_per_run=0.25, executor="ray", workers=2))
    pending = exp.pending()[1]
    exp.device = torch.device("cuda:1")
    (job,) = exp.jobs(pending)
    assert isinstance(exp.executor, RayExecutor)
    assert (job.num_gpus, job.num_cpus, job.threads, job.device) == (0.25, 1.0, 1, "cuda")  # Ray picks the GPU
    assert job.checkpoint_root == str(exp.store.root)  # a local Ray shares the store
    exp.executor = RayExecutor(address="10.0.0.1:6379")
    (job,) = exp.jobs(pending)
    assert job.checkpoint_root == str(exp.store.root)  # each job checks on its node that it sees it (ray_probe)
