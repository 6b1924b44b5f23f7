"""What recording costs: the same digits training run with and without per-sample recorders.

CSL's claim is that it is free: the training pass already computes every sample's loss, so
recording it is one scatter (once an epoch: the loop holds its batches for the training-pass
recorders, `harness/recorders/held.py`). Each test here times plain runs and recorded runs
alternately (a plain run in pedantic's untimed `setup`, then the timed recorded run, each round),
so drifting machine load hits both alike, and reports

- `ratio_wall`: median recorded wall time / median plain wall time (target: <= 1.01 for csl);
- `ratio_paired`: median over rounds of recorded / plain (robust to slow drifts);
- `overhead_inloop`: the harness's own accounting, recorder seconds / training seconds, i.e. what
  the cost task charges the proxy on top of training.

All three go to `benchmark.extra_info` (and so into `--benchmark-json`) and are printed (`-s`).
Environment knobs: MEMPROX_BENCH_DEVICE (cpu; cuda), MEMPROX_BENCH_MODEL (mlp; small_cnn), MEMPROX_BENCH_EPOCHS (10),
MEMPROX_BENCH_ROUNDS (7), MEMPROX_BENCH_THREADS (1: the digits MLP is too small to gain from more,
and a shared box makes torch's thread pool spin).

The digits MLP is the worst case for relative overhead: a training step is ~2 ms (CPU) or a launch-
bound ~1.6 ms (GPU), so a recorder's fixed cost (Python dispatch, kernel launches, the Stopwatch's
CUDA events) weighs more than it would next to a real model's step. The ≤ 1% target
is reported (`target_met`), not asserted; the assertions only guard against gross regressions
(e.g. a per-batch host sync or a per-sample Python loop).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace

import pytest
import torch

from harness.datasets import load_dataset
from harness.prepared import PreparedData, prepare
from harness.presets import preset_for
from harness.recorders import RecorderRequest
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.training import RunOutput, train_run

DEVICE = torch.device(os.environ.get("MEMPROX_BENCH_DEVICE", "cpu"))
EPOCHS = int(os.environ.get("MEMPROX_BENCH_EPOCHS", "10"))
ROUNDS = int(os.environ.get("MEMPROX_BENCH_ROUNDS", "7"))
MODEL = os.environ.get("MEMPROX_BENCH_MODEL", "mlp")
TARGET = 1.01  # recorded / plain wall time

CSL = [RecorderRequest.of("train_loss")]
TRAINING_PASS = [RecorderRequest.of(n) for n in ("train_loss", "train_correct", "train_margin", "train_prob")]



@pytest.fixture(scope="module")
def setup_run() -> tuple[RunSpec, PreparedData]:
    data_spec = DataSpec(dataset="digits", corruption=Corruption(kind="noise", rate=0.1, seed=0))
    data = prepare(data_spec, load_dataset("digits"), DEVICE)
    preset = preset_for("quick", "digits")
    spec = RunSpec(data=data_spec, model=MODEL, recipe=replace(preset.recipe, epochs=EPOCHS), seed=0)
    return spec, data


def _timed(spec: RunSpec, data: PreparedData, requests: list[RecorderRequest]) -> tuple[RunOutput, float]:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    t0 = time.perf_counter()
    out = train_run(spec, data, requests, progress=False)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return out, time.perf_counter() - t0


def _overhead(benchmark, setup_run, requests: list[RecorderRequest], name: str) -> dict[str, float]:
    spec, data = setup_run
    _timed(spec, data, [])  # warm-up: allocator, kernels, FLOP counter
    _timed(spec, data, requests)
    plain: list[float] = []
    recorded: list[float] = []
    inloop: list[float] = []

    def run_plain() -> None:
        plain.append(_timed(spec, data, [])[1])

    def run_recorded() -> None:
        out, seconds = _timed(spec, data, requests)
        recorded.append(seconds)
        inloop.append(sum(out.recorder_seconds.values()) / out.train_seconds)

    benchmark.pedantic(run_recorded, setup=run_plain, rounds=ROUNDS, iterations=1)
    n = min(len(plain), len(recorded))  # one round each when --benchmark-disable
    info = {
        "ratio_wall": statistics.median(recorded[:n]) / statistics.median(plain[:n]),
        "ratio_paired": statistics.median(r / p for r, p in zip(recorded[:n], plain[:n], strict=True)),
        "overhead_inloop": statistics.median(inloop),
        "plain_seconds": statistics.median(plain[:n]),
        "recorded_seconds": statistics.median(recorded[:n]),
        "rounds": n,
        "epochs": EPOCHS,
        "device": str(DEVICE),
        "model": MODEL,
        "threads": torch.get_num_threads(),
    }
    info["target_met"] = info["ratio_paired"] <= TARGET
    benchmark.extra_info.update(info)
    print(f"\n[{name}] {MODEL} on {DEVICE}, {EPOCHS} epochs, {n} rounds: plain {info['plain_seconds']:.3f}s, "
          f"recorded {info['recorded_seconds']:.3f}s, ratio_wall {info['ratio_wall']:.4f}, "
          f"ratio_paired {info['ratio_paired']:.4f}, in-loop overhead {100 * info['overhead_inloop']:.2f}% "
          f"(target <= {TARGET}: {'met' if info['target_met'] else 'MISSED'})")
    return info


def test_csl_recording_overhead(benchmark, setup_run) -> None:
    info = _overhead(benchmark, setup_run, CSL, "csl (train_loss)")
    assert info["overhead_inloop"] < 0.10  # 0.45% (CPU, held batches); per batch: 1.8% (CPU), 3.8% (H200)


def test_all_training_pass_recorders_overhead(benchmark, setup_run) -> None:
    info = _overhead(benchmark, setup_run, TRAINING_PASS, "train_loss+train_correct+train_margin+train_prob")
    # 5.4% on the CPU with held batches, 16% batch by batch (31% on an H200, per batch): on the CPU
    # the bound also catches the loop falling back to recording batch by batch
    assert info["overhead_inloop"] < (0.12 if DEVICE.type == "cpu" else 0.60)
