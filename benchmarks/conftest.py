"""Shared benchmark settings: every benchmark runs torch at MEMPROX_BENCH_THREADS threads (default
1: the benchmark models are small, and one thread keeps paired timings steady on a busy machine)."""

from __future__ import annotations

import os

import pytest
import torch

THREADS = int(os.environ.get("MEMPROX_BENCH_THREADS", "1"))


@pytest.fixture(scope="module", autouse=True)
def _bench_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)
