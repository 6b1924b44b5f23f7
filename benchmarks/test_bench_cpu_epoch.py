"""One small_cnn training epoch on CIFAR-10 on one CPU thread (issue 17: target <= 80 s for the
50,000 images), channels-last at batch 128 as the `cpu-full` preset trains. Needs the image folder
(MEMPROX_CIFAR10_DIR, default ../shared/data/cifar10); MEMPROX_BENCH_IMAGES (default 50000) scales
it down for a quick look. `benchmarks/bench_speed.py --only epoch` also times the other layouts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import bench_epoch  # noqa: E402

CIFAR = Path(os.environ.get("MEMPROX_CIFAR10_DIR", Path(__file__).resolve().parents[2] / "shared/data/cifar10"))
IMAGES = int(os.environ.get("MEMPROX_BENCH_IMAGES", "50000"))


@pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason=f"no CIFAR-10 image folder at {CIFAR}")
def test_small_cnn_epoch_on_one_thread(benchmark) -> None:
    out = benchmark.pedantic(bench_epoch, args=(CIFAR, IMAGES, ("batch128_channels_last",)), rounds=1,
                             iterations=1)
    figure = out["batch128_channels_last"]
    benchmark.extra_info.update(figure)
    print(f"\nsmall_cnn epoch at 50,000 images (1 thread, channels-last, batch 128): "
          f"{figure['epoch_s_at_50000']:.1f} s ({figure['images_per_s']:.0f} img/s), target <= 80 s")
