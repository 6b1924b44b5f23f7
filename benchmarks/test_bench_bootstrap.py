"""Benchmark: bootstrap intervals at the embedded default's scale take seconds, not minutes.

Run with `pytest benchmarks/test_bench_bootstrap.py --benchmark-only -s`. N = 1,800 samples (the
digits training set) and B = 1,000 resamples, for 5 proxies: detection (AUROC, AUPRC, precision at
k) per proxy, then similarity (cosine, Pearson, Spearman, top-k) of all 5 against one reference.
An experiment scores ~15 proxies in ~20 settings, so a second here is ~a minute there.
`extra_info` holds the seconds per proxy of each. The assertions catch gross regressions only
(a per-resample Python loop): they were a timed test in the default suite until December 2026.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.bootstrap import Resamples
from harness.metrics import detection_boot
from harness.similarity import similarity_boot

N, B, PROXIES = 1800, 1000, 5


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, Resamples]:
    rng = np.random.default_rng(2)
    positives = rng.random(N) < 0.1
    proxies = {f"p{i}": rng.normal(size=N) + positives for i in range(PROXIES)}
    return positives, proxies, rng.random(N), Resamples.draw(N, B, "speed")


def test_detection_bootstrap(benchmark, scores) -> None:
    positives, proxies, _, resamples = scores

    def run() -> None:
        for s in proxies.values():
            detection_boot(positives, s, resamples)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    per_proxy = benchmark.stats.stats.median / PROXIES
    benchmark.extra_info.update({"n": N, "resamples": B, "proxies": PROXIES, "seconds_per_proxy": per_proxy})
    print(f"\n[detection] N={N}, B={B}: {per_proxy:.3f} s per proxy")
    assert per_proxy < 2.0


def test_similarity_bootstrap(benchmark, scores) -> None:
    _, proxies, reference, resamples = scores
    benchmark.pedantic(lambda: similarity_boot(proxies, reference, resamples), rounds=3, iterations=1,
                       warmup_rounds=1)
    per_proxy = benchmark.stats.stats.median / PROXIES
    benchmark.extra_info.update({"n": N, "resamples": B, "proxies": PROXIES, "seconds_per_proxy": per_proxy})
    print(f"\n[similarity] N={N}, B={B}: {per_proxy:.3f} s per proxy")
    assert per_proxy < 4.0
