"""Benchmark: the input-gradient recorder is shared, so three proxies that read it cost one.

Run with `pytest benchmarks/test_bench_input_grads.py` (not collected by the default `pytest`).
Both cases train the same digits run with the quick preset; the only difference is how many
proxies request `input_grads`. The planner merges identical requests, so the times should agree
to noise (ratio ~1).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from harness.config import ExperimentConfig
from harness.experiment import Experiment
from harness.presets import preset_for
from harness.recorders import RecorderRequest
from harness.training import train_run

EPOCHS = 10
CASES = {"one_proxy": "loss_sensitivity", "three_proxies": "loss_sensitivity,learning_time,csg"}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", list(CASES))
def test_train_with_input_grads(benchmark, tmp_path, one_thread, case: str) -> None:
    cfg = ExperimentConfig(recipe=replace(preset_for("quick", "digits").recipe, epochs=EPOCHS),
                           proxies=CASES[case], seeds=(0,), tasks=("mislabeled",), noise_rates=(0.1,),
                           device="cpu", out=tmp_path / "out", store=tmp_path / "store", progress=False)
    exp = Experiment(cfg)
    ((spec, requests),) = exp.plan.runs.items()
    assert requests == {RecorderRequest.of("input_grads")}  # one recorder, however many proxies ask
    out = benchmark.pedantic(train_run, args=(spec, exp.prepared(spec.data), sorted(requests, key=lambda r: r.key)),
                             kwargs={"progress": False}, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["train_seconds"] = out.train_seconds
    benchmark.extra_info["input_grads_seconds"] = out.recorder_seconds["input_grads"]
