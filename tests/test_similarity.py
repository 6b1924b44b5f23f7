"""Similarity metrics against hand computations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from harness.errors import HarnessError
from harness.similarity import similarity_metrics

KEYS = {"cosine", "pearson", "spearman", "cosine_topk", "pearson_topk", "spearman_topk"}


def test_cosine_by_hand() -> None:
    m = similarity_metrics(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    assert set(m) == KEYS
    assert m["cosine"] == pytest.approx(1 / np.sqrt(2))


def test_matches_numpy_scipy() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(200)
    proxy = ref + rng.normal(0, 0.3, 200)
    m = similarity_metrics(proxy, ref)
    assert m["cosine"] == pytest.approx(proxy @ ref / np.linalg.norm(proxy) / np.linalg.norm(ref))
    assert m["pearson"] == pytest.approx(np.corrcoef(proxy, ref)[0, 1])
    assert m["spearman"] == pytest.approx(stats.spearmanr(proxy, ref).statistic)
    top = np.argsort(ref)[-20:]  # default k = 10% of 200
    assert m["pearson_topk"] == pytest.approx(np.corrcoef(proxy[top], ref[top])[0, 1])
    assert m["spearman_topk"] == pytest.approx(stats.spearmanr(proxy[top], ref[top]).statistic)


def test_topk_picks_highest_reference() -> None:
    ref = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.0])
    proxy = np.array([5.0, 1.0, 5.0, 2.0, 3.0, 5.0])
    m = similarity_metrics(proxy, ref, top_k=3)  # samples 1, 3, 4
    a, b = proxy[[1, 3, 4]], ref[[1, 3, 4]]
    assert m["cosine_topk"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert m["spearman_topk"] == pytest.approx(-1.0)
    assert m["pearson_topk"] == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_nan_reference_dropped_pairwise() -> None:
    ref = np.array([0.1, np.nan, 0.5, 0.3, np.nan])
    proxy = np.array([1.0, 100.0, 3.0, 2.0, -50.0])
    m = similarity_metrics(proxy, ref)
    expected = similarity_metrics(proxy[[0, 2, 3]], ref[[0, 2, 3]])
    assert m == pytest.approx(expected, nan_ok=True)
    assert m["spearman"] == pytest.approx(1.0)


def test_constant_vectors_give_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = similarity_metrics(np.ones(10), np.arange(10.0))
    assert np.isnan(m["pearson"]) and np.isnan(m["spearman"])
    assert m["cosine"] == pytest.approx(np.arange(10.0).sum() / np.sqrt(10 * 285))
    # default top-k of 10 samples is 1 sample: no statistic of one sample (its cosine would be its sign)
    assert np.isnan(m["pearson_topk"]) and np.isnan(m["cosine_topk"])


def test_length_mismatch() -> None:
    with pytest.raises(HarnessError):
        similarity_metrics(np.ones(3), np.ones(4))


def test_topk_boundary_ties_are_the_expectation_over_random_tie_breaks() -> None:
    # reference: one clear top sample, then four tied at 0.5 for the remaining 2 places of k = 3.
    # methods.md: the expected value under random tie-breaking, i.e. the mean over the 6 equally
    # likely top-3 sets {0} + 2 of the 4 tied; the harness estimates it from TIE_DRAWS seeded draws
    # (lowest index first, the old stable sort, would take samples 1 and 2 every time)
    from itertools import combinations

    from harness.similarity import TIE_DRAWS

    ref = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])
    proxy = np.array([4.0, 3.0, 0.0, 1.0, 2.0, 9.0])
    m = similarity_metrics(proxy, ref, top_k=3)
    sets = [np.r_[0, list(pair)] for pair in combinations([1, 2, 3, 4], 2)]
    stats_by_metric = {"cosine_topk": lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b),
                       "pearson_topk": lambda a, b: np.corrcoef(a, b)[0, 1],
                       "spearman_topk": lambda a, b: stats.spearmanr(a, b).statistic}
    expected = {}
    for metric, stat in stats_by_metric.items():
        values = np.array([stat(proxy[t], ref[t]) for t in sets])
        expected[metric] = values.mean()
        tolerance = 4 * values.std() / np.sqrt(TIE_DRAWS) + 1e-12  # four Monte Carlo standard errors
        assert m[metric] == pytest.approx(values.mean(), abs=tolerance), metric
    # the other statistic, each tied sample at weight 2/4 (0.791), is not it (0.849); nor is lowest
    # index first (0.693, the set {0, 1, 2})
    w = np.array([1.0, 0.5, 0.5, 0.5, 0.5, 0.0])
    mp, mr = (w * proxy).sum() / w.sum(), (w * ref).sum() / w.sum()
    fractional = (w * (proxy - mp) * (ref - mr)).sum() / np.sqrt(
        (w * (proxy - mp) ** 2).sum() * (w * (ref - mr) ** 2).sum())
    assert fractional == pytest.approx(0.7906, abs=1e-4) and expected["pearson_topk"] == pytest.approx(0.8495, abs=1e-4)
    assert abs(m["pearson_topk"] - fractional) > 0.05
    assert abs(m["pearson_topk"] - np.corrcoef(proxy[:3], ref[:3])[0, 1]) > 0.1
    swapped = similarity_metrics(proxy[[0, 4, 3, 2, 1, 5]], ref, top_k=3)  # the tied ones reordered
    assert swapped["pearson_topk"] == pytest.approx(expected["pearson_topk"], abs=0.015)
    assert similarity_metrics(proxy, ref, top_k=3) == m  # seeded: the same number every time


def test_topk_resamples_fill_exactly_k_places_by_random_tie_breaks() -> None:
    from harness.similarity import top_k_weights

    rng = np.random.default_rng(1)
    ref = np.r_[np.full(5, 2.0), np.full(40, 1.0), np.zeros(55)]  # k = 20: 15 places among 40 tied
    weights = rng.multinomial(100, np.full(100, 0.01), size=64).astype(float)
    top = top_k_weights(ref, weights, 20, np.random.default_rng(0))
    np.testing.assert_allclose(top.sum(axis=1), np.minimum(20, weights.sum(axis=1)))
    assert (top == np.round(top)).all() and (top <= weights).all()  # whole resampled copies, never more than drawn
    assert (top[:, ref == 0] == 0).all() and (top[:, ref == 2] == weights[:, ref == 2]).all()
    fractional = top_k_weights(ref, weights, 20)  # without a draw: expected membership, same total
    np.testing.assert_allclose(fractional.sum(axis=1), top.sum(axis=1))


def test_topk_without_boundary_ties_is_the_plain_subset() -> None:
    rng = np.random.default_rng(3)
    ref, proxy = rng.random(50), rng.random(50)
    m = similarity_metrics(proxy, ref, top_k=7)
    top = np.argsort(-ref)[:7]
    assert m["spearman_topk"] == pytest.approx(stats.spearmanr(proxy[top], ref[top]).statistic)
    assert m["pearson_topk"] == pytest.approx(np.corrcoef(proxy[top], ref[top])[0, 1])


def test_nonfinite_proxy_gives_nan_metrics() -> None:
    m = similarity_metrics(np.array([1.0, np.nan, 3.0, 4.0]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert all(np.isnan(v) for v in m.values())
