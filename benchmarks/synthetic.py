"""CIFAR-shaped synthetic data for throughput benchmarks: the device machine cannot download
CIFAR, and how fast a step runs does not depend on the pixels."""

from __future__ import annotations

import torch

from harness.datasets import Dataset


def synthetic_images(n: int, side: int = 32, classes: int = 10) -> Dataset:
    """`n` random uint8 RGB images of `side` x `side` with random labels, and no test split."""
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic", x_train=torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g),
        y_train=torch.randint(0, classes, (n,), generator=g), x_test=torch.zeros(0, 3, side, side, dtype=torch.uint8),
        y_test=torch.zeros(0, dtype=torch.int64), classes=tuple(str(c) for c in range(classes)), full_train_size=n)
