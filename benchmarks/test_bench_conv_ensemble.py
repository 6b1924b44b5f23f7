"""Stability ensembles of batch-norm conv nets: K members batched vs trained one at a time.

A stability reference needs K models per setting; this measures how many an hour each engine
delivers for the two models the issue names, `small_cnn` (the quick preset's recipe) and
`resnet18` (the gpu preset's recipe), on CIFAR-shaped synthetic data resident on the device:

    pytest benchmarks/test_bench_conv_ensemble.py --benchmark-only -s          # small, on the CPU
    MEMPROX_BENCH_DEVICE=cuda pytest benchmarks/test_bench_conv_ensemble.py --benchmark-only -s

Both engines train the same K stability specs (random 70 % subsets) for MEMPROX_BENCH_EPOCHS
epochs; one at a time trains the first MEMPROX_BENCH_SINGLES of them (a ResNet-18 run costs
minutes, and every member costs the same). Reported in extra_info: seconds per member-epoch of
each engine, the speed-up, and `models_per_hour_*`, members of the full recipe (the preset's epoch
count) per hour, scaled from N images to full CIFAR-10's 70 % subsets (35,000 images) when
MEMPROX_BENCH_N is smaller. On a CPU the planner never batches conv nets (stacked convolutions
are grouped convolutions, which the CPU kernels serve slowly); the CPU case shows that figure.

Environment: MEMPROX_BENCH_DEVICE (cpu), MEMPROX_BENCH_N (cuda 10000, cpu 256), MEMPROX_BENCH_K
(cuda 16, cpu 4), MEMPROX_BENCH_SINGLES (cuda 2, cpu 4), MEMPROX_BENCH_EPOCHS (1),
MEMPROX_BENCH_SIDE (cuda 32, cpu 16), MEMPROX_BENCH_MODELS (small_cnn,resnet18).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest
import torch
from synthetic import synthetic_images

from baselines.stability import stability_specs
from harness.ensemble import ensemble_chunks, train_ensemble
from harness.prepared import prepare
from harness.presets import preset_for
from harness.recorders import EVAL_LAST
from harness.runspec import DataSpec, RunSpec
from harness.training import train_run

DEVICE = torch.device(os.environ.get("MEMPROX_BENCH_DEVICE", "cpu"))
GPU = DEVICE.type == "cuda"
N = int(os.environ.get("MEMPROX_BENCH_N", "10000" if GPU else "256"))
K = int(os.environ.get("MEMPROX_BENCH_K", "16" if GPU else "4"))
SINGLES = int(os.environ.get("MEMPROX_BENCH_SINGLES", "2" if GPU else "4"))
EPOCHS = int(os.environ.get("MEMPROX_BENCH_EPOCHS", "1"))
SIDE = int(os.environ.get("MEMPROX_BENCH_SIDE", "32" if GPU else "16"))
MODELS = os.environ.get("MEMPROX_BENCH_MODELS", "small_cnn,resnet18").split(",")
FULL_SUBSET = 35_000  # a 70 % subset of CIFAR-10's 50,000 training images

#: model -> the preset whose recipe its stability ensembles train with
PRESET_OF = {"small_cnn": "quick", "resnet18": "gpu"}


def _sync() -> None:
    if GPU:
        torch.cuda.synchronize(DEVICE)


def _recipe(model: str):
    recipe = preset_for(PRESET_OF.get(model, "quick"), "imagefolder:cifar").recipe
    if not GPU:  # CPUs without bf16 units run bf16 several times slower: time what a CPU user would run
        recipe = replace(recipe, precision="fp32", channels_last=False)
    return recipe


@pytest.fixture(scope="module")
def data():
    return prepare(DataSpec(dataset="synthetic"), synthetic_images(N, SIDE), DEVICE)


@pytest.mark.parametrize("model", MODELS)
def test_models_per_hour(benchmark, data, model: str) -> None:
    full = _recipe(model)
    recipe = replace(full, epochs=EPOCHS)
    specs = stability_specs(RunSpec(data.spec, model, recipe, seed=0), K, 0.7)
    members = len(specs)
    train_ensemble(specs[:1], data, [EVAL_LAST], progress=False)  # warm-up: allocator, kernels
    _sync()
    t0 = time.perf_counter()
    for spec in specs[:SINGLES]:
        train_run(spec, data, [EVAL_LAST], progress=False)
    _sync()
    single_s = (time.perf_counter() - t0) / SINGLES / EPOCHS  # per member-epoch, eval pass included
    chunks = ensemble_chunks(specs, data)
    outs = benchmark.pedantic(train_ensemble, args=(specs, data, [EVAL_LAST]), kwargs={"progress": False},
                              rounds=1, iterations=1)
    _sync()
    ensemble_s = benchmark.stats.stats.mean / members / EPOCHS
    scale = FULL_SUBSET / (0.7 * N)  # per-epoch time grows with the images seen
    info = {
        "model": model, "device": str(DEVICE), "n": N, "side": SIDE, "k": members, "chunks": len(chunks),
        "epochs_timed": EPOCHS, "recipe_epochs": full.epochs, "precision": recipe.precision,
        "threads": torch.get_num_threads(),
        "single_s_per_member_epoch": single_s, "ensemble_s_per_member_epoch": ensemble_s,
        "speedup": single_s / ensemble_s,
        "models_per_hour_single": 3600 / (single_s * scale * full.epochs),
        "models_per_hour_ensemble": 3600 / (ensemble_s * scale * full.epochs),
    }
    benchmark.extra_info.update(info)
    print(f"\n{model} on {DEVICE}: {members} members in {len(chunks)} chunk(s); per member-epoch "
          f"{ensemble_s:.3f} s batched vs {single_s:.3f} s alone ({single_s / ensemble_s:.2f}x); "
          f"full-CIFAR models/hour at {full.epochs} epochs: {info['models_per_hour_ensemble']:.3g} batched, "
          f"{info['models_per_hour_single']:.3g} alone")
    assert len(outs) == members and all(o.train_flops > 0 for o in outs)
