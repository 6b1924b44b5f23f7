"""Audit of the task metrics against methods.md §3, on small cases computed independently.

- A top-k set far from the overall mean and narrow beside that offset is not a constant vector:
  its Pearson correlation is scipy's, not NaN (the constant test compared its variance with the
  mean square of the vector centred over all N).
- A bootstrap resample's top-k tie-break is a random tie-break of the resampled *multiset*: a
  sample drawn twice is two tied elements, so it fills a place twice as often as one drawn once.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.bootstrap import Resamples
from harness.similarity import similarity_boot, similarity_metrics, top_k_weights


def _offset_case(side: str, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(proxy, reference) where one side's top-20 values sit far from that side's overall mean and
    within a tiny spread of each other: the reference at 1 +- 1e-6 (the rest in [0, 0.5]), or the
    proxy at 1e6 +- 0.01 (the rest ~0). Both top-20 vectors vary, so Pearson is defined."""
    rng = np.random.default_rng(7)
    in_top = np.zeros(n, dtype=bool)
    in_top[rng.choice(n, 20, replace=False)] = True
    if side == "reference":
        ref = np.where(in_top, 1 + 1e-6 * rng.random(n), 0.5 * rng.random(n))
        return rng.normal(size=n), ref
    ref = rng.random(n) + in_top
    return rng.normal(0, 0.01, n) + 1e6 * in_top, ref


@pytest.mark.parametrize("side", ["reference", "proxy"])
def test_a_narrow_top_k_set_far_from_the_mean_has_scipys_pearson(side: str) -> None:
    p, r = _offset_case(side)
    top = np.argsort(-r)[:20]
    m = similarity_metrics(p, r, top_k=20)
    assert m["pearson_topk"] == pytest.approx(stats.pearsonr(p[top], r[top]).statistic, abs=1e-9)  # was NaN
    # the bootstrap replicates too: the plain Pearson of the 20 highest elements of each resample
    # (reference values are distinct and copies of a sample equal, so that multiset is unique)
    resamples = Resamples.draw(len(r), 8, "audit", side)
    boot = similarity_boot({"p": p}, r, resamples, top_k=20)["p"]["pearson_topk"]
    for b in range(resamples.b):
        idx = np.repeat(np.arange(len(r)), resamples.counts[b])
        chosen = idx[np.argsort(-r[idx], kind="stable")[:20]]
        assert boot[b] == pytest.approx(np.corrcoef(p[chosen], r[chosen])[0, 1], abs=1e-9)


def test_drawn_tie_breaks_fill_places_by_element_not_by_sample() -> None:
    """Two tied samples drawn 2 and 1 times, one place: the twice-drawn one takes it with
    probability 2/3 (the fractional expectation), not 1/2; every row fills exactly k places."""
    ref = np.array([1.0, 1.0, 0.0])
    weights = np.tile([2.0, 1.0, 1.0], (6000, 1))
    for k, expected in [(1, [2 / 3, 1 / 3, 0]), (2, [4 / 3, 2 / 3, 0])]:
        top = top_k_weights(ref, weights, k, np.random.default_rng(0))
        np.testing.assert_allclose(top.sum(axis=1), k)
        np.testing.assert_allclose(top.mean(axis=0), expected, atol=0.03)  # ~5 standard errors
        np.testing.assert_allclose(top_k_weights(ref, weights[:1], k)[0], expected)  # fractional: the same mean


def test_bootstrap_top_k_replicates_average_to_the_multiset_expectation() -> None:
    """Every resample draws samples 0, 1, 1, 2; k = 2: sample 0 is in, and the last place goes
    to sample 1 (2 of the 3 tied elements) or 2. The replicates average 2/3 c1 + 1/3 c2."""
    ref = np.array([1.0, 0.5, 0.5, 0.0])
    proxy = np.array([1.0, 5.0, -5.0, 0.0])
    resamples = Resamples(np.tile(np.array([1, 2, 1, 0], dtype=np.uint16), (6000, 1)))
    cos = similarity_boot({"p": proxy}, ref, resamples, top_k=2)["p"]["cosine_topk"]

    def cosine(i: int) -> float:
        a, b = proxy[[0, i]], ref[[0, i]]
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    c1, c2 = cosine(1), cosine(2)  # 0.614 and -0.263
    assert set(np.round(cos, 9)) == {round(c1, 9), round(c2, 9)}
    assert cos.mean() == pytest.approx(2 / 3 * c1 + 1 / 3 * c2, abs=0.03)  # was (c1 + c2) / 2 = 0.176
