"""How close memprox's training loop runs to the hardware, and what recording and precision change.

Three measurements on CIFAR-shaped data resident on the device (synthetic uint8 images and random
labels: throughput does not depend on the pixels, and the device machine cannot download CIFAR):

- `test_loop_vs_bare_loop`: `train_run` without recorders against a bare loop of the same model,
  recipe and resident data (permutation, gather, normalise, optional crop/flip, forward,
  cross-entropy, backward, step; no recorders, no per-epoch sync, no FLOP counting, no final
  accuracy pass). `ratio_wall` = bare seconds / memprox seconds for the whole call (target >= 0.95
  on a GPU); `ratio_loop` uses memprox's own loop clock (`train_seconds`) instead, i.e. without
  the final accuracy pass and the FLOP-counted first batch.
- `test_csl_recording_overhead`: `train_run` with and without the `train_loss` recorder
  (`ratio_paired`, target <= 1.01; `overhead_inloop` is what the cost task charges).
- `test_images_per_second`: training images per second of the bare step for ResNet-18 in fp32 and
  in bf16 + channels-last (and compiled, with MEMPROX_BENCH_COMPILE=1).

Plain and measured runs alternate round after round (one in pedantic's untimed `setup`), so load
drifting on a shared machine hits both alike. Figures go to `benchmark.extra_info` and are printed
(`-s`). Assertions only catch gross regressions; targets are reported (`target_met`).

Sizes: on CUDA full CIFAR (50,000 32x32 images, ResNet-18, 3 epochs, batch 512); on the CPU a small
run (512 images, small_cnn, 2 epochs, batch 128; ResNet-18 throughput on 16x16 images), about two
minutes on one core. Environment knobs:
MEMPROX_BENCH_DEVICE, MEMPROX_BENCH_MODEL, MEMPROX_BENCH_N, MEMPROX_BENCH_EPOCHS,
MEMPROX_BENCH_BATCH, MEMPROX_BENCH_ROUNDS, MEMPROX_BENCH_PRECISION (fp32; bf16 sets channels-last
too), MEMPROX_BENCH_AUGMENT (0), MEMPROX_BENCH_THREADS (1), MEMPROX_BENCH_COMPILE (0: 1 compiles
both loops' models and adds a compiled throughput case); for images/second MEMPROX_BENCH_IPS_SIDE,
MEMPROX_BENCH_IPS_BATCH, MEMPROX_BENCH_IPS_STEPS.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from synthetic import synthetic_images
from torch import nn

from harness.models import build_model
from harness.precision import autocast, channels_last
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe, make_optimizer, make_scheduler, random_crop_flip
from harness.recorders import RecorderRequest
from harness.runspec import DataSpec, RunSpec
from harness.training import train_run

DEVICE = torch.device(os.environ.get("MEMPROX_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
GPU = DEVICE.type == "cuda"
MODEL = os.environ.get("MEMPROX_BENCH_MODEL", "resnet18" if GPU else "small_cnn")
N = int(os.environ.get("MEMPROX_BENCH_N", "50000" if GPU else "512"))
EPOCHS = int(os.environ.get("MEMPROX_BENCH_EPOCHS", "3" if GPU else "2"))
BATCH = int(os.environ.get("MEMPROX_BENCH_BATCH", "512" if GPU else "128"))
ROUNDS = int(os.environ.get("MEMPROX_BENCH_ROUNDS", "3"))
PRECISION = os.environ.get("MEMPROX_BENCH_PRECISION", "fp32")
AUGMENT = os.environ.get("MEMPROX_BENCH_AUGMENT", "0") == "1"
COMPILE = os.environ.get("MEMPROX_BENCH_COMPILE", "0") == "1"
# images/second: full size on a GPU; one 8-image step of 16x16 images on the CPU (a 32x32 ResNet-18
# training step costs ~3.3 GFLOPs per image, and CPUs without bf16 units run bf16 ~8x slower)
_IPS = (32, BATCH, 50) if GPU else (16, 8, 1)
IPS_SIDE, IPS_BATCH, IPS_STEPS = (int(os.environ.get(f"MEMPROX_BENCH_IPS_{k}", d))
                                  for k, d in zip(("SIDE", "BATCH", "STEPS"), _IPS, strict=True))

RECIPE = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=BATCH, epochs=EPOCHS,
                schedule="onecycle", milestones=(), augment=AUGMENT, precision=PRECISION,
                channels_last=PRECISION == "bf16")
LOOP_TARGET = 0.95  # bare / memprox wall time
CSL_TARGET = 1.01  # recorded / plain wall time


@pytest.fixture(scope="module")
def resident() -> tuple[RunSpec, PreparedData]:
    spec = DataSpec(dataset="synthetic")
    data = prepare(spec, synthetic_images(N, 32), DEVICE)
    return RunSpec(data=spec, model=MODEL, recipe=RECIPE, seed=0), data


def _sync() -> None:
    if GPU:
        torch.cuda.synchronize(DEVICE)


def _bare_model(model_name: str, recipe: Recipe, data_shape: tuple[int, ...], compiled: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(model_name, tuple(data_shape), 10).to(DEVICE)
    if recipe.channels_last:
        channels_last(model)
    return torch.compile(model) if compiled else model


def _bare_step(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, xb: torch.Tensor,
               yb: torch.Tensor) -> None:
    if recipe.channels_last:
        xb = channels_last(xb)
    with autocast(DEVICE, recipe.precision):
        logits = model(xb)
    loss = nn.functional.cross_entropy(logits.float(), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bare_loop(spec: RunSpec, data: PreparedData) -> float:
    """Seconds for the whole run: what a hand-written loop on the same resident data costs."""
    recipe = spec.recipe
    _sync()
    t0 = time.perf_counter()
    model = _bare_model(spec.model, recipe, data.x.shape[1:], COMPILE)
    optimizer = make_optimizer(recipe, model.parameters())
    scheduler = make_scheduler(recipe, optimizer)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    model.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(data.n, device=DEVICE, generator=gen)
        for start in range(0, data.n, recipe.batch_size):
            idx = perm[start : start + recipe.batch_size]
            xb = data.x[idx]
            if recipe.augment:  # on the raw images, as train_run does (black padding)
                xb = random_crop_flip(xb, recipe.crop_padding, gen)
            xb = data.normalize(xb)
            _bare_step(model, optimizer, recipe, xb, data.y[idx])
        scheduler.step()
    _sync()
    return time.perf_counter() - t0


def memprox_loop(spec: RunSpec, data: PreparedData, requests: list[RecorderRequest]):
    _sync()
    t0 = time.perf_counter()
    out = train_run(spec, data, requests, progress=False, compile=COMPILE)
    _sync()
    return out, time.perf_counter() - t0


def _alternate(benchmark, plain: Callable[[], None], measured: Callable[[], None]) -> None:
    plain()  # warm-up: allocator, cuDNN autotuning, FLOP counter
    measured()
    benchmark.pedantic(measured, setup=plain, rounds=ROUNDS, iterations=1)


def _report(benchmark, name: str, info: dict) -> None:
    info.update(device=str(DEVICE), model=MODEL, n=N, epochs=EPOCHS, batch=BATCH, precision=PRECISION,
                augment=AUGMENT, threads=torch.get_num_threads(), compile=COMPILE)
    benchmark.extra_info.update(info)
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
    print(f"\n[{name}] {shown}")


def test_loop_vs_bare_loop(benchmark, resident) -> None:
    spec, data = resident
    bare: list[float] = []
    wall: list[float] = []
    loop: list[float] = []

    def run_memprox() -> None:
        out, seconds = memprox_loop(spec, data, [])
        wall.append(seconds)
        loop.append(out.train_seconds)

    _alternate(benchmark, lambda: bare.append(bare_loop(spec, data)), run_memprox)
    bare, wall, loop = bare[1:], wall[1:], loop[1:]  # drop the warm-up round
    n = min(len(bare), len(wall))
    images = N * EPOCHS
    info = {
        "ratio_wall": statistics.median(b / w for b, w in zip(bare[:n], wall[:n], strict=True)),
        "ratio_loop": statistics.median(b / s for b, s in zip(bare[:n], loop[:n], strict=True)),
        "bare_images_per_s": images / statistics.median(bare[:n]),
        "memprox_images_per_s": images / statistics.median(wall[:n]),
        "rounds": n,
    }
    info["target_met"] = info["ratio_wall"] >= LOOP_TARGET
    _report(benchmark, "memprox loop vs bare loop", info)
    assert info["ratio_wall"] > 0.5  # a per-batch host sync or per-sample Python would show here


def test_csl_recording_overhead(benchmark, resident) -> None:
    spec, data = resident
    plain: list[float] = []
    recorded: list[float] = []
    inloop: list[float] = []

    def run_recorded() -> None:
        out, seconds = memprox_loop(spec, data, [RecorderRequest.of("train_loss")])
        recorded.append(seconds)
        inloop.append(sum(out.recorder_seconds.values()) / out.train_seconds)

    _alternate(benchmark, lambda: plain.append(memprox_loop(spec, data, [])[1]), run_recorded)
    plain, recorded, inloop = plain[1:], recorded[1:], inloop[1:]
    n = min(len(plain), len(recorded))
    info = {
        "ratio_paired": statistics.median(r / p for r, p in zip(recorded[:n], plain[:n], strict=True)),
        "overhead_inloop": statistics.median(inloop),
        "plain_seconds": statistics.median(plain[:n]),
        "rounds": n,
    }
    info["target_met"] = info["ratio_paired"] <= CSL_TARGET
    _report(benchmark, "csl (train_loss) recording", info)
    assert info["overhead_inloop"] < 0.10


VARIANTS = [("fp32", False, False), ("bf16", True, False)] + ([("bf16", True, True)] if COMPILE else [])


@pytest.mark.parametrize(("precision", "nhwc", "compiled"), VARIANTS,
                         ids=[f"{p}{'-channels_last' if c else ''}{'-compiled' if k else ''}" for p, c, k in VARIANTS])
def test_images_per_second(benchmark, precision: str, nhwc: bool, compiled: bool) -> None:
    """ResNet-18 training steps on resident random batches: the hardware figure the loop chases."""
    recipe = replace(RECIPE, precision=precision, channels_last=nhwc, batch_size=IPS_BATCH)
    model = _bare_model("resnet18", recipe, (3, IPS_SIDE, IPS_SIDE), compiled).train()
    optimizer = make_optimizer(recipe, model.parameters())
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(IPS_BATCH, 3, IPS_SIDE, IPS_SIDE, device=DEVICE, generator=g)
    y = torch.randint(0, 10, (IPS_BATCH,), device=DEVICE, generator=g)

    seconds: list[float] = []

    def steps() -> None:
        _sync()
        t0 = time.perf_counter()
        for _ in range(IPS_STEPS):
            _bare_step(model, optimizer, recipe, x, y)
        _sync()
        seconds.append(time.perf_counter() - t0)

    steps()  # warm-up (and compilation)
    benchmark.pedantic(steps, rounds=ROUNDS, iterations=1)
    info = {"images_per_s": IPS_STEPS * IPS_BATCH / statistics.median(seconds[1:]), "side": IPS_SIDE,
            "ips_batch": IPS_BATCH,
            "channels_last": nhwc, "compiled": compiled}
    _report(benchmark, f"resnet18 {precision}{' channels-last' if nhwc else ''}{' compiled' if compiled else ''}",
            info)
    assert info["images_per_s"] > 0
