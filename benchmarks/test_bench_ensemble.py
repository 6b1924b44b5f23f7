"""Batched ensemble vs one run at a time: K digits MLPs of the stability reference.

    pytest benchmarks/test_bench_ensemble.py -s                       # quick digits recipe, CPU
    MEMPROX_BENCH_DEVICE=cuda pytest benchmarks/test_bench_ensemble.py -s

Environment: MEMPROX_BENCH_K (64), MEMPROX_BENCH_EPOCHS (the quick preset's 40),
MEMPROX_BENCH_DEVICE (cpu), MEMPROX_BENCH_BIG_K (256), MEMPROX_BENCH_MODEL (the preset's mlp; mlp_small
is the 64-unit one-hidden-layer MLP). Torch threads are left at their default.
The speed-up and times are printed and stored in the benchmark's extra_info.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from baselines.stability import stability_specs
from harness.datasets import load_dataset
from harness.ensemble import train_ensemble
from harness.prepared import prepare
from harness.presets import preset_for
from harness.recorders import EVAL_LAST
from harness.runspec import DataSpec, RunSpec
from harness.training import train_run

K = int(os.environ.get("MEMPROX_BENCH_K", "64"))
BIG_K = int(os.environ.get("MEMPROX_BENCH_BIG_K", "256"))
DEVICE = torch.device(os.environ.get("MEMPROX_BENCH_DEVICE", "cpu"))
PRESET = preset_for("quick", "digits")
RECIPE = replace(PRESET.recipe, epochs=int(os.environ.get("MEMPROX_BENCH_EPOCHS", PRESET.recipe.epochs)))
MODEL = os.environ.get("MEMPROX_BENCH_MODEL", PRESET.model)


@pytest.fixture(scope="module")
def data():
    return prepare(DataSpec(), load_dataset("digits"), DEVICE)


def _specs(k: int) -> list[RunSpec]:
    return stability_specs(RunSpec(DataSpec(), MODEL, RECIPE, seed=0), k, 0.7)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def test_ensemble_vs_one_at_a_time(benchmark, data) -> None:
    specs = _specs(K)
    train_ensemble(specs[:2], data, [EVAL_LAST], progress=False)  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    singles = [train_run(s, data, [EVAL_LAST], progress=False) for s in specs]
    _sync()
    one_at_a_time = time.perf_counter() - t0
    outs = benchmark.pedantic(train_ensemble, args=(specs, data, [EVAL_LAST]), kwargs={"progress": False},
                              rounds=1, iterations=1)
    ensemble = benchmark.stats.stats.mean
    agree = float(np.mean([(o.arrays[EVAL_LAST.key]["correct"] == s.arrays[EVAL_LAST.key]["correct"]).mean()
                           for o, s in zip(outs, singles, strict=True)]))
    info = {"k": K, "model": MODEL, "epochs": RECIPE.epochs, "device": str(DEVICE), "threads": torch.get_num_threads(),
            "one_at_a_time_s": one_at_a_time, "ensemble_s": ensemble, "speedup": one_at_a_time / ensemble,
            "eval_correct_agreement": agree}
    benchmark.extra_info.update(info)
    print(f"\nensemble of {K}: {ensemble:.1f} s; one at a time: {one_at_a_time:.1f} s; "
          f"speed-up {one_at_a_time / ensemble:.1f}x; eval agreement {agree:.4f} ({info})")
    assert agree >= 0.99


def test_ensemble_big_k(benchmark, data) -> None:
    specs = _specs(BIG_K)
    outs = benchmark.pedantic(train_ensemble, args=(specs, data, [EVAL_LAST]), kwargs={"progress": False},
                              rounds=1, iterations=1)
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update({"k": BIG_K, "epochs": RECIPE.epochs, "device": str(DEVICE), "seconds": seconds,
                                 "threads": torch.get_num_threads()})
    print(f"\nensemble of {BIG_K}: {seconds:.1f} s ({seconds / BIG_K:.2f} s per model)")
    assert len(outs) == BIG_K
    if RECIPE.epochs >= PRESET.recipe.epochs:  # the recipe fits digits; a short MEMPROX_BENCH_EPOCHS run does not
        assert all(o.train_acc > 0.9 for o in outs)
