"""Detection metrics: equal to scikit-learn's, hand-checked precision@k, NaN handling."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.metrics import detection_metrics, precision_at_k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_auprc_equal_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positives = rng.random(300) < 0.2
    scores = rng.normal(size=300) + positives * 0.7
    m = detection_metrics(positives, scores)
    assert m["auroc"] == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(positives, scores), abs=1e-12)
    k = int(positives.sum())
    top = np.argsort(-scores)[:k]
    assert m["precision_at_k"] == pytest.approx(positives[top].mean(), abs=1e-12)


def test_precision_at_k_by_hand() -> None:
    positives = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.6])  # ranking: 0, 1, 3, 5, 4, 2
    assert precision_at_k(positives, scores, 1) == 1.0
    assert precision_at_k(positives, scores, 2) == 0.5
    assert precision_at_k(positives, scores, 3) == pytest.approx(1 / 3)
    assert precision_at_k(positives, scores, 4) == 0.5
    assert precision_at_k(positives, scores, 6) == 0.5
    assert np.isnan(precision_at_k(positives, scores, 0))


def test_precision_at_k_is_the_expectation_under_random_tie_breaking() -> None:
    # three samples tied at the top, two of them positive: any of the three is equally likely to
    # take a place, so each place holds 2/3 of a positive in expectation (index order said 0 and 1/2)
    positives = np.array([0, 1, 1, 0], dtype=bool)
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    assert precision_at_k(positives, scores, 1) == pytest.approx(2 / 3)
    assert precision_at_k(positives, scores, 2) == pytest.approx(2 / 3)
    assert precision_at_k(positives, scores, 3) == pytest.approx(2 / 3)
    assert precision_at_k(positives, scores, 4) == pytest.approx(1 / 2)
    # a tie group straddling the k-th place: 0.9 is in, {0.5 x 4, one positive} fills 2 places
    positives = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])
    assert precision_at_k(positives, scores, 3) == pytest.approx((1 + 2 * 1 / 4) / 3)
    # the same holds whichever position the tied positive sits at (no index bias)
    assert precision_at_k(positives[[0, 4, 2, 3, 1, 5]], scores, 3) == pytest.approx((1 + 2 * 1 / 4) / 3)


def test_precision_at_k_equals_the_mean_over_all_tie_orders() -> None:
    from itertools import permutations

    positives = np.array([1, 0, 1, 0, 0, 1, 0], dtype=bool)
    scores = np.array([3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 0.0])
    for k in range(1, 8):
        hits = []
        for perm in permutations(range(7)):  # break ties by a random order: average over all orders
            order = sorted(range(7), key=lambda i: (-scores[i], perm[i]))
            hits.append(positives[order[:k]].mean())
        assert precision_at_k(positives, scores, k) == pytest.approx(np.mean(hits), abs=1e-12)


def test_nan_scores_rank_lowest() -> None:
    positives = np.array([1, 1, 0, 0], dtype=bool)
    scores = np.array([np.nan, 0.3, 0.2, 0.1])
    m = detection_metrics(positives, scores)
    # the NaN positive sits below every negative: AUROC = (2 + 0) / 4
    assert m["auroc"] == pytest.approx(0.5)
    assert m["auroc"] == pytest.approx(roc_auc_score(positives, [-1e9, 0.3, 0.2, 0.1]))
    assert m["precision_at_k"] == 0.5
    assert precision_at_k(positives, np.array([np.nan, np.nan, 1.0, 0.0]), 2) == 0.0


def test_infinite_and_huge_scores_keep_their_order() -> None:
    # +inf above 1e17, -inf below every finite score, NaN below -inf: no offset rounds into a tie
    positives = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    scores = np.array([np.inf, 1e17, 2e16, 1e17, -np.inf, np.nan])
    expected = roc_auc_score(positives, [6, 5, 4, 5, 2, 1])
    assert detection_metrics(positives, scores)["auroc"] == pytest.approx(expected)
    assert precision_at_k(positives, scores, 1) == 1.0
    only_infinite = np.array([np.inf, -np.inf, np.inf, -np.inf, np.nan, np.nan])  # a ranking still
    expected = roc_auc_score(positives, [3, 2, 3, 2, 1, 1])
    assert detection_metrics(positives, only_infinite)["auroc"] == pytest.approx(expected)


def test_all_nan_scores_are_nan_metrics_not_chance() -> None:
    # a proxy that scored nothing has no ranking: NaN (reported as a failure), never a silent 0.5
    m = detection_metrics(np.array([1, 0, 0], dtype=bool), np.full(3, np.nan))
    assert all(np.isnan(v) for v in m.values())


def test_degenerate_ground_truth_gives_nan() -> None:
    scores = np.arange(5.0)
    for positives in (np.zeros(5, dtype=bool), np.ones(5, dtype=bool)):
        m = detection_metrics(positives, scores)
        assert set(m) == {"auroc", "auprc", "precision_at_k"}
        assert all(np.isnan(v) for v in m.values())


def test_easy_case_is_nearly_perfect() -> None:
    rng = np.random.default_rng(0)
    positives = rng.random(1000) < 0.1
    scores = positives.astype(float) + rng.normal(scale=0.05, size=1000)
    m = detection_metrics(positives, scores)
    assert m["auroc"] > 0.99
    assert m["auprc"] > 0.99
    assert m["precision_at_k"] > 0.98


def test_perfect_and_reversed_rankings() -> None:
    positives = np.array([0, 0, 1, 1], dtype=bool)
    assert detection_metrics(positives, np.array([0.1, 0.2, 0.3, 0.4])) == {
        "auroc": 1.0, "auprc": 1.0, "precision_at_k": 1.0}
    m = detection_metrics(positives, np.array([0.4, 0.3, 0.2, 0.1]))
    assert m["auroc"] == 0.0
    assert m["precision_at_k"] == 0.0
    # AP with the positives at ranks 3 and 4: (1/3 + 2/4) / 2
    assert m["auprc"] == pytest.approx((1 / 3 + 2 / 4) / 2)
