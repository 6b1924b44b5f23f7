"""Detection metrics: AUROC and AUPRC (scikit-learn for the point estimate), precision at k, and
the same three on bootstrap resamples (harness.bootstrap) as weighted statistics.

NaN scores (a proxy that could not score a sample) rank lowest. A proxy whose scores are all
NaN has no ranking at all: its metrics are NaN, never the 0.5 of a constant score.

Ties: precision at k is the expected value under random tie-breaking -- the samples tied at the
k-th highest score fill the remaining places of the top k fractionally (each contributes
places_left / tied), never "lowest index first". AUROC counts a tied (positive, negative) pair as
1/2 and AUPRC puts tied samples at one threshold, as scikit-learn does.

On a resample, sample i carries weight w_i = how often it was drawn; every statistic below is
the plain statistic of the resampled multiset, computed from the weights: samples are grouped by
distinct score once (one sort), and per-group positive and negative weights give the counts.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.bootstrap import Resamples

DETECTION = ("auroc", "auprc", "precision_at_k")


def _clean(scores: np.ndarray) -> np.ndarray:
    """NaN (could not score) ranks below every finite score; +inf above, -inf below."""
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    lo, hi = np.min(finite, initial=0.0), np.max(finite, initial=0.0)
    return np.where(np.isnan(s), lo - 2.0, np.clip(s, lo - 1.0, hi + 1.0))


def _groups(positives: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, in *descending* score order: (b, U) each."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = positives[order]
    return np.add.reduceat(w * pos, starts, axis=1), np.add.reduceat(w * ~pos, starts, axis=1)


def _expected_top_k(pos: np.ndarray, neg: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Expected positive weight among the k highest under random tie-breaking; pos/neg (b, U)
    descending groups, k (b,). A group fully above the k-th place counts whole, the group holding
    it counts by the fraction of its members that fit, groups below count nothing."""
    total = pos + neg
    before = np.cumsum(total, axis=1) - total
    frac = np.divide(k[:, None] - before, total, out=np.zeros_like(total), where=total > 0)
    return (pos * np.clip(frac, 0.0, 1.0)).sum(axis=1)


def weighted_detection(positives: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, AUPRC and precision at k (k = positive weight) for each row of weights (b, N)."""
    positives = np.asarray(positives, dtype=bool)
    weights = np.atleast_2d(weights)
    nan = np.full(weights.shape[0], np.nan)
    if not np.isfinite(np.asarray(scores, dtype=np.float64)).any():
        return {m: nan.copy() for m in DETECTION}
    pos, neg = _groups(positives, _clean(scores), weights)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    ok = (n_pos > 0) & (n_neg > 0)
    neg_below = n_neg[:, None] - np.cumsum(neg, axis=1)  # strictly lower scores (descending order)
    auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    ap = (pos * precision).sum(axis=1)
    hits = _expected_top_k(pos, neg, n_pos)
    return {
        "auroc": np.divide(auc, n_pos * n_neg, out=nan.copy(), where=ok),
        "auprc": np.divide(ap, n_pos, out=nan.copy(), where=ok),
        "precision_at_k": np.divide(hits, n_pos, out=nan.copy(), where=ok),
    }


def precision_at_k(positives: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Expected fraction of positives among the k highest scores under random tie-breaking."""
    positives = np.asarray(positives, dtype=bool)
    if k <= 0 or not np.isfinite(np.asarray(scores, dtype=np.float64)).any():
        return float("nan")
    pos, neg = _groups(positives, _clean(scores), np.ones((1, len(positives))))
    return float(_expected_top_k(pos, neg, np.array([float(min(k, len(positives)))]))[0] / k)


def detection_metrics(positives: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    positives = np.asarray(positives, dtype=bool)
    if positives.all() or not positives.any() or not np.isfinite(np.asarray(scores, dtype=np.float64)).any():
        return {m: float("nan") for m in DETECTION}
    s = _clean(scores)
    return {
        "auroc": float(roc_auc_score(positives, s)),
        "auprc": float(average_precision_score(positives, s)),
        "precision_at_k": precision_at_k(positives, s, int(positives.sum())),
    }


def detection_boot(positives: np.ndarray, scores: np.ndarray, resamples: Resamples) -> dict[str, np.ndarray]:
    """The detection metrics on each of the B resamples: {metric: (B,)}."""
    return resamples.apply(lambda w: weighted_detection(positives, scores, w))
