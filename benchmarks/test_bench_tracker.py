"""What `SampleTracker` costs in a user's own loop: the same plain PyTorch loop with and without it.

The loop is the README's: the digits MLP of the quick preset (SGD lr 0.1, momentum 0.9, cosine,
batch 128) over inputs already normalized in memory, so a step is as cheap as it gets and the
tracker's fixed per-batch cost weighs the most (a DataLoader or a real model makes it relatively
smaller). Plain and tracked runs alternate, round after round (plain in pedantic's untimed `setup`,
tracked timed), and each test reports

- `ratio_paired`: median over rounds of tracked / plain wall time (target: <= 1.01);
- `ratio_wall`: median tracked / median plain;
- `ratio_cpu`: like `ratio_paired` with the process's CPU time instead of wall time (on a CPU run,
  much less sensitive to other processes competing for the cores);
- `overhead_inloop`: CPU seconds inside `update`/`end_epoch` / CPU seconds of the tracked loop
  (exact on the CPU, where every call is synchronous and runs on this thread; not meaningful on a GPU).

Cases: csl from the losses the loop already has (`proxies=["csl"]`, `update(idx, losses=loss)`),
and every training-pass proxy (`update(idx, losses=loss, logits=logits, labels=y)`: csl,
forgetting, threshold_lt, aum, el2n, variability). The target is reported (`target_met`), not
asserted; the assertions only catch gross regressions (a host sync or per-sample Python per batch).
Knobs: MEMPROX_BENCH_DEVICE (cpu; cuda), MEMPROX_BENCH_EPOCHS (10), MEMPROX_BENCH_ROUNDS (7),
MEMPROX_BENCH_THREADS (1).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.datasets import load_dataset
from harness.models import build_model

DEVICE = torch.device(os.environ.get("MEMPROX_BENCH_DEVICE", "cpu"))
EPOCHS = int(os.environ.get("MEMPROX_BENCH_EPOCHS", "10"))
ROUNDS = int(os.environ.get("MEMPROX_BENCH_ROUNDS", "7"))
TARGET = 1.01
BATCH = 128


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits")
    x = ds.x_train.float() / 255.0
    x = (x - x.mean()) / x.std()
    return x.to(DEVICE), ds.y_train.to(DEVICE)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def user_loop(x: torch.Tensor, y: torch.Tensor, track: Callable[..., None] | None,
              end_epoch: Callable[[], None] | None) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", tuple(x.shape[1:]), 10).to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(y), generator=gen).to(DEVICE).split(BATCH):
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()
            if track is not None:
                track(idx, loss, logits, y[idx])
        sched.step()
        if end_epoch is not None:
            end_epoch()


def _overhead(benchmark, digits, name: str, proxies: list[str] | None, with_logits: bool) -> dict[str, object]:
    x, y = digits
    inside: list[float] = []
    cpu: dict[str, list[float]] = {"plain": [], "tracked": []}

    def tracked_run() -> float:
        tracker = SampleTracker(len(y), proxies=proxies)
        spent = 0.0

        def track(idx, loss, logits, labels) -> None:
            nonlocal spent
            t = time.thread_time()
            if with_logits:
                tracker.update(idx, losses=loss, logits=logits, labels=labels)
            else:
                tracker.update(idx, losses=loss)
            spent += time.thread_time() - t

        def end_epoch() -> None:
            nonlocal spent
            t = time.thread_time()
            tracker.end_epoch()
            spent += time.thread_time() - t

        _sync()
        t0, c0 = time.perf_counter(), time.process_time()
        user_loop(x, y, track, end_epoch)
        _sync()
        total, cpu_total = time.perf_counter() - t0, time.process_time() - c0
        inside.append(spent / cpu_total)
        cpu["tracked"].append(cpu_total)
        assert tracker.scores().shape[0] == len(y)
        return total

    def plain_run() -> float:
        _sync()
        t0, c0 = time.perf_counter(), time.process_time()
        user_loop(x, y, None, None)
        _sync()
        cpu["plain"].append(time.process_time() - c0)
        return time.perf_counter() - t0

    plain_run(), tracked_run()  # warm-up
    inside.clear()
    cpu["plain"].clear()
    cpu["tracked"].clear()
    plain: list[float] = []
    tracked: list[float] = []
    benchmark.pedantic(lambda: tracked.append(tracked_run()), setup=lambda: plain.append(plain_run()),
                       rounds=ROUNDS, iterations=1)
    n = min(len(plain), len(tracked))
    info: dict[str, object] = {
        "ratio_paired": statistics.median(t / p for t, p in zip(tracked[:n], plain[:n], strict=True)),
        "ratio_wall": statistics.median(tracked[:n]) / statistics.median(plain[:n]),
        "ratio_cpu": statistics.median(t / p for t, p in zip(cpu["tracked"][:n], cpu["plain"][:n], strict=True)),
        "overhead_inloop": statistics.median(inside),
        "plain_seconds": statistics.median(plain[:n]),
        "tracked_seconds": statistics.median(tracked[:n]),
        "steps": EPOCHS * -(-len(y) // BATCH),
        "rounds": n,
        "epochs": EPOCHS,
        "device": str(DEVICE),
        "threads": torch.get_num_threads(),
    }
    info["target_met"] = info["ratio_paired"] <= TARGET
    benchmark.extra_info.update(info)
    print(f"\n[{name}] digits mlp on {DEVICE}, {EPOCHS} epochs ({info['steps']} steps), {n} rounds: "
          f"plain {info['plain_seconds']:.3f}s, tracked {info['tracked_seconds']:.3f}s, "
          f"ratio_paired {info['ratio_paired']:.4f}, ratio_wall {info['ratio_wall']:.4f}, "
          f"ratio_cpu {info['ratio_cpu']:.4f}, "
          f"in tracker {100 * info['overhead_inloop']:.2f}% "
          f"(target <= {TARGET}: {'met' if info['target_met'] else 'MISSED'})")
    return info


def test_tracker_csl_from_losses_overhead(benchmark, digits) -> None:
    info = _overhead(benchmark, digits, "csl from losses", ["csl"], with_logits=False)
    assert info["overhead_inloop"] < 0.10


def test_tracker_all_training_pass_proxies_overhead(benchmark, digits) -> None:
    info = _overhead(benchmark, digits, "all training-pass proxies", None, with_logits=True)
    assert info["overhead_inloop"] < 0.60
