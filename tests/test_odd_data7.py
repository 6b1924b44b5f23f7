"""Data of unusual shape (review 7, odd-data): every number right or refused clearly, never a
statistic that holds whatever the proxy (a correlation of two samples, a flag of a constant)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from harness.bootstrap import Resamples
from harness.errors import HarnessError
from harness.similarity import similarity_boot, similarity_metrics
from harness.tasks import memorization, privacy
from harness.tasks.memorization import Memorization
from harness.tasks.privacy import all_proxy_metrics, proxy_metrics


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def test_top_k_of_two_samples_has_no_correlation() -> None:
    """N = 20 gives a default top-k set of 2 samples, whose Pearson and Spearman were +-1 for every
    proxy (a leaderboard of 0.000 means from -1 and +1, all tied with the best); the cosine of two
    samples is still a statistic, and the all-sample metrics are scipy's."""
    rng = np.random.default_rng(0)
    ref, proxy = rng.random(20), rng.random(20)
    m = similarity_metrics(proxy, ref)
    assert np.isnan(m["pearson_topk"]) and np.isnan(m["spearman_topk"])
    top = np.argsort(-ref)[:2]
    a, b = proxy[top], ref[top]
    assert m["cosine_topk"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert m["pearson"] == pytest.approx(stats.pearsonr(proxy, ref)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(proxy, ref)[0])


def test_top_k_of_one_sample_has_no_cosine() -> None:
    """N = 8 gives a top-k set of one sample: its cosine was 1.0 for any positive proxy."""
    rng = np.random.default_rng(1)
    m = similarity_metrics(rng.random(8) + 1, rng.random(8) + 1)
    assert all(np.isnan(m[k]) for k in ("cosine_topk", "pearson_topk", "spearman_topk"))
    assert np.isfinite(m["cosine"]) and np.isfinite(m["pearson"])


def test_three_samples_still_correlate() -> None:
    ref, proxy = np.array([0.9, 0.5, 0.1]), np.array([1.0, 3.0, 2.0])
    m = similarity_metrics(proxy, ref, top_k=3)
    assert m["pearson"] == pytest.approx(stats.pearsonr(proxy, ref)[0])
    assert m["spearman_topk"] == pytest.approx(-0.5)


def test_two_estimated_samples_give_nan_correlations() -> None:
    """A reference with two finite entries (the rest never held out): Pearson over 2 points is NaN."""
    ref = np.array([0.2, np.nan, 0.7, np.nan])
    m = similarity_metrics(np.array([1.0, 5.0, 2.0, 9.0]), ref)
    assert np.isnan(m["pearson"]) and np.isnan(m["spearman"])
    assert m["cosine"] == pytest.approx((0.2 + 1.4) / np.sqrt(5 * 0.53))


def test_a_resample_of_two_distinct_samples_is_nan() -> None:
    """Replicate 0 drew only samples 0 and 1 (4 copies): its Pearson was +-1 by construction."""
    ref = np.array([0.1, 0.4, 0.3, 0.9, 0.5])
    proxy = np.array([2.0, 1.0, 4.0, 3.0, 0.0])
    counts = np.array([[2, 3, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=np.uint16)
    boot = _quiet(similarity_boot, {"p": proxy}, ref, Resamples(counts), top_k=5)["p"]
    assert np.isnan(boot["pearson"][0]) and np.isnan(boot["spearman"][0])
    assert boot["pearson"][1] == pytest.approx(stats.pearsonr(proxy, ref)[0])
    assert np.isfinite(boot["cosine"][0])


@pytest.mark.parametrize("top_k", [1, 2])
def test_memorization_refuses_a_top_k_too_small_to_correlate(top_k: int) -> None:
    with pytest.raises(HarnessError, match=rf"memorization.top_k must be at least 3, got {top_k}"):
        Memorization(top_k=top_k)
    assert Memorization(top_k=3).params["top_k"] == 3


def test_small_default_top_k_warns_why_it_is_blank() -> None:
    with pytest.warns(UserWarning, match=r"holds 2 of the 20 samples with a reference estimate: pearson_topk and"):
        memorization.small_top_k_warning(20, None)
    with pytest.warns(UserWarning, match="and cosine_topk are NaN"):
        memorization.small_top_k_warning(8, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memorization.small_top_k_warning(26, None)  # k = round(2.6) = 3: nothing to say
        memorization.small_top_k_warning(20, 5)


def test_privacy_flags_of_a_constant_vulnerability_are_nan() -> None:
    """Every sample equally vulnerable: the "10 % most vulnerable" are an arbitrary set, and every
    proxy scored AUROC 0.5 and AUPRC 0.1 against it."""
    m = _quiet(proxy_metrics, np.full(10, 0.5), np.arange(10.0), np.ones((1, 10)), 0.1)
    assert all(np.isnan(m[k][0]) for k in ("pearson", "spearman", "auroc", "auprc"))
    with pytest.warns(UserWarning, match="same vulnerability"):
        privacy.few_vulnerabilities_warning(np.full(10, 0.5))


def test_privacy_with_two_vulnerable_samples_has_no_correlation() -> None:
    """Two samples with a vulnerability (the rest never held out): Pearson and Spearman were 1.0."""
    v = np.r_[np.full(8, np.nan), 0.3, 0.6]
    points, _ = _quiet(all_proxy_metrics, v, {"a": np.arange(10.0)}, 0.1, None)
    assert np.isnan(points["a"]["pearson"][0]) and np.isnan(points["a"]["spearman"][0])
    with pytest.warns(UserWarning, match="only 2 samples have a vulnerability"):
        privacy.few_vulnerabilities_warning(v)


def test_privacy_point_metrics_match_scipy_and_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    v, s = rng.random(40), rng.random(40)
    m = proxy_metrics(v, s, np.ones((1, 40)), 0.1)
    flagged = v >= np.sort(v)[-4]  # the 4 most vulnerable, no ties
    assert m["pearson"][0] == pytest.approx(stats.pearsonr(s, v)[0])
    assert m["spearman"][0] == pytest.approx(stats.spearmanr(s, v)[0])
    assert m["auroc"][0] == pytest.approx(roc_auc_score(flagged, s))


def test_suspects_warns_when_its_top_k_is_every_sample() -> None:
    """N = 20 at the default k = 40: every proxy's top k was all 20 samples, and the leaderboard
    listed one predicted_other_at_k (0.250) for every proxy, as if they agreed."""
    from types import SimpleNamespace

    import torch

    from harness.tasks.suspects import Suspects

    cfg = SimpleNamespace(seeds=[0])
    small = SimpleNamespace(x_train=torch.zeros(20, 3), x_test=torch.zeros(0, 3))
    with pytest.warns(UserWarning, match="suspects.k 40 is not below the N=20 training samples"):
        assert len(Suspects().settings(cfg, None, small)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Suspects(k=10).settings(cfg, None, small)


def test_a_constant_reference_gives_nan_correlations_and_says_why() -> None:
    ref = np.r_[np.zeros(30), np.nan]
    m = _quiet(similarity_metrics, np.arange(31.0), ref)
    assert all(np.isnan(m[k]) for k in ("pearson", "spearman", "cosine", "pearson_topk", "spearman_topk"))
    with pytest.warns(UserWarning, match="reference is 0 for all 30 samples with an estimate"):
        memorization.flat_reference_warning(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memorization.flat_reference_warning(np.r_[np.zeros(29), 1.0])
