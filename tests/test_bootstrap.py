"""Bootstrap: resamples are reproducible and shared, each weighted metric on a resample equals the
plain metric on the resampled (repeated) samples, and the combination rules by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.bootstrap import Resamples, combine_seeds, compare_differences, generator, percentile_interval
from harness.metrics import detection_boot, precision_at_k
from harness.similarity import similarity_boot


def _expanded(resamples: Resamples, b: int) -> np.ndarray:
    """Resample b as explicit sample indices (each sample repeated as often as it was drawn)."""
    return np.repeat(np.arange(resamples.n), resamples.counts[b])


def test_resamples_are_seeded_by_their_key_and_sum_to_n() -> None:
    a, b = (Resamples.draw(50, 20, "mislabeled", "noise=0.1", 0) for _ in range(2))
    c = Resamples.draw(50, 20, "mislabeled", "noise=0.1", 1)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)
    assert (a.counts.sum(axis=1) == 50).all() and a.counts.shape == (20, 50)
    # each sample is drawn with probability 1/N per draw: mean count 1
    big = Resamples.draw(200, 500, "x")
    assert big.counts.mean() == pytest.approx(1.0) and 0.3 < (big.counts == 0).mean() < 0.45  # ~ e^-1


def test_chunks_cover_every_resample_in_order(monkeypatch) -> None:
    import harness.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 70)  # 70 // 30 = 2 rows per chunk
    r = Resamples.draw(30, 5, "k")
    np.testing.assert_array_equal(np.concatenate(list(r.chunks())), r.counts)
    assert len(list(r.chunks())) == 3


def test_detection_replicates_equal_sklearn_on_the_resampled_samples() -> None:
    rng = np.random.default_rng(0)
    positives = rng.random(120) < 0.2
    scores = np.round(rng.normal(size=120) + positives, 1)  # rounded: many ties
    scores[3] = np.nan  # ranks lowest, as in the point estimate
    resamples = Resamples.draw(120, 40, "det")
    boot = detection_boot(positives, scores, resamples)
    clean = np.where(np.isnan(scores), np.nanmin(scores) - 2, scores)
    for b in range(0, 40, 7):
        idx = _expanded(resamples, b)
        p, s = positives[idx], clean[idx]
        assert boot["auroc"][b] == pytest.approx(roc_auc_score(p, s), abs=1e-12)
        assert boot["auprc"][b] == pytest.approx(average_precision_score(p, s), abs=1e-12)
        assert boot["precision_at_k"][b] == pytest.approx(precision_at_k(p, s, int(p.sum())), abs=1e-12)


def test_all_nan_proxy_has_nan_replicates() -> None:
    boot = detection_boot(np.array([1, 0, 0, 1], bool), np.full(4, np.nan), Resamples.draw(4, 5, "nan"))
    assert all(np.isnan(v).all() for v in boot.values())


def test_similarity_replicates_equal_scipy_on_the_resampled_samples() -> None:
    rng = np.random.default_rng(1)
    ref = np.round(rng.random(150), 2)
    ref[[5, 9]] = np.nan  # dropped from every resample
    proxy = np.round(np.nan_to_num(ref) + rng.normal(0, 0.3, 150), 1)
    resamples = Resamples.draw(150, 30, "sim")
    boot = similarity_boot({"p": proxy}, ref, resamples, top_k=20)["p"]
    untied = 0
    for b in range(0, 30, 6):
        idx = _expanded(resamples, b)
        idx = idx[~np.isnan(ref[idx])]
        p, r = proxy[idx], ref[idx]
        assert boot["pearson"][b] == pytest.approx(np.corrcoef(p, r)[0, 1], abs=1e-10)
        assert boot["spearman"][b] == pytest.approx(stats.spearmanr(p, r).statistic, abs=1e-10)
        assert boot["cosine"][b] == pytest.approx(p @ r / np.linalg.norm(p) / np.linalg.norm(r), abs=1e-12)
        # top-k of the resample: the plain top 20 of the resampled multiset when its 20th place is
        # not tied; when it is, one random tie-break of the resample's own (tests/test_similarity.py)
        order = np.sort(r)[::-1]
        if order[19] != order[20]:
            untied += 1
            top = np.argsort(-r, kind="stable")[:20]
            assert boot["pearson_topk"][b] == pytest.approx(np.corrcoef(p[top], r[top])[0, 1], abs=1e-10)
            assert boot["spearman_topk"][b] == pytest.approx(stats.spearmanr(p[top], r[top]).statistic, abs=1e-10)
        else:
            assert -1 <= boot["pearson_topk"][b] <= 1
    assert untied >= 1


def test_combine_seeds_and_compare_by_hand() -> None:
    values = np.array([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [np.nan, 5.0]]])  # (P=2, S=2, B=2)

    class Fixed:  # seed draws: replicate 0 takes seeds (1, 1), replicate 1 takes (0, 1)
        def integers(self, low, high, size):
            return np.array([[1, 1], [0, 1]])

    reps = combine_seeds(values, Fixed())  # type: ignore[arg-type]
    # replicate 0: seed 1 twice, its replicates 0 and 1 (a second copy is another resample);
    # replicate 1: seeds 0 and 1, each its replicate 1. A missing value (NaN) is left out.
    np.testing.assert_allclose(reps, [[3.5, 3.0], [5.0, 3.0]])
    pair = np.array([[0.5, 0.6, 0.7, 0.8], [0.6, 0.5, 0.7, 0.9]])
    p, tied = compare_differences(pair - pair[0])
    assert p.tolist() == [1.0, 0.75] and tied.tolist() == [True, True]
    pair = np.array([[0.5, 0.6], [0.1, 0.2]])
    p, tied = compare_differences(pair - pair[0])
    assert p.tolist() == [1.0, 0.0] and tied.tolist() == [True, False]
    low, high = percentile_interval(np.array([[np.nan, np.nan], [1.0, 3.0]]))
    assert np.isnan(low[0]) and (low[1], high[1]) == (pytest.approx(1.05), pytest.approx(2.95))
    assert generator("a", 1).integers(0, 10**9) == generator("a", 1).integers(0, 10**9)


@pytest.mark.parametrize(("resamples", "warned"), [(0, False), (1, True), (39, True), (99, True), (100, False),
                                                   (1000, False)])
def test_a_few_resamples_are_allowed_but_said(resamples: int, warned: bool) -> None:
    """Fewer than 40 resamples put none in a 2.5 % tail, so the '95 % interval' is the resamples' range."""
    import warnings

    from harness.api import experiment_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment_config(bootstrap=resamples)
    said = [str(w.message) for w in caught if "bootstrap=" in str(w.message)]  # keywords: from the API
    assert bool(said) is warned
    if warned:
        assert f"bootstrap={resamples}: with fewer than 100 resamples" in said[0] and "use 1000" in said[0]
