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
    # default top-k of 10 samples is 1 sample: correlations undefined, cosine defined
    assert np.isnan(m["pearson_topk"]) and m["cosine_topk"] == pytest.approx(1.0)


def test_length_mismatch() -> None:
    with pytest.raises(HarnessError):
        similarity_metrics(np.ones(3), np.ones(4))


def test_topk_boundary_ties_share_the_last_places_equally() -> None:
    # reference: one clear top sample, then four tied at 0.5 for the remaining 2 places of k = 3.
    # The old stable sort took samples 1 and 2 (lowest index); now all four tied samples carry
    # weight 2/4, so permuting the tied samples changes nothing.
    ref = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])
    proxy = np.array([4.0, 3.0, 0.0, 1.0, 2.0, 9.0])
    m = similarity_metrics(proxy, ref, top_k=3)
    w = np.array([1.0, 0.5, 0.5, 0.5, 0.5, 0.0])
    # weighted cosine and Pearson over the weighted top-k set, written out
    norms = np.sqrt((w * proxy**2).sum() * (w * ref**2).sum())
    assert m["cosine_topk"] == pytest.approx((w * proxy * ref).sum() / norms)
    mp, mr = (w * proxy).sum() / w.sum(), (w * ref).sum() / w.sum()
    cov = (w * (proxy - mp) * (ref - mr)).sum()
    var = (w * (proxy - mp) ** 2).sum() * (w * (ref - mr) ** 2).sum()
    assert m["pearson_topk"] == pytest.approx(cov / np.sqrt(var))
    old = np.argsort(-ref, kind="stable")[:3]  # lowest-index tie-breaking: samples 0, 1, 2
    assert m["pearson_topk"] != pytest.approx(np.corrcoef(proxy[old], ref[old])[0, 1])
    swapped = similarity_metrics(proxy[[0, 4, 3, 2, 1, 5]], ref, top_k=3)  # same values, tied ones reordered
    assert swapped == pytest.approx(m, nan_ok=True)


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
