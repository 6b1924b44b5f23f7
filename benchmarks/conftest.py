"""Shared benchmark settings: every benchmark runs torch at MEMPROX_BENCH_THREADS threads (default
1: the benchmark models are small, and one thread keeps paired timings steady on a busy machine).
A benchmark module whose DEVICE (MEMPROX_BENCH_DEVICE) is CUDA is skipped where CUDA is absent."""

from __future__ import annotations

import os

import pytest
import torch

THREADS = int(os.environ.get("MEMPROX_BENCH_THREADS", "1"))


def pytest_collection_modifyitems(config, items) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="MEMPROX_BENCH_DEVICE asks for CUDA, which this machine lacks")
    for item in items:
        device = getattr(item.module, "DEVICE", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def _bench_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)
