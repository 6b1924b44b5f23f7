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
from scipy import sparse

from harness.bootstrap import Resamples

DETECTION = ("auroc", "auprc", "precision_at_k")


def _dense_ranks(scores: np.ndarray) -> np.ndarray:
    """Dense ranks: NaN (could not score) 0, below every score, -inf and +inf included. Ranks keep
    the order and the ties of the scores, so every statistic here is unchanged, and no offset from
    the finite range can round into it (1e17 + 1.0 == 1e17 would tie +inf with the maximum)."""
    from scipy.stats import rankdata  # scipy.stats and sklearn.metrics: ~1 s of imports, paid by the first metric

    s = np.asarray(scores, dtype=np.float64)
    return np.nan_to_num(rankdata(s, method="dense", nan_policy="omit"), nan=0.0)


def _at_positive_groups(
    positives: np.ndarray, scores: np.ndarray, weights: np.ndarray, integral: bool = False,
    live: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative weights in descending score order, read only where they matter: at the tie groups
    that hold a positive (every statistic below sums over positives). Returns, per row of weights
    (b, N), the positive and total weight through each such group and through the group before
    it, (b, G) each, and the total positive and total weight (b,). One sort, one gather, one cumsum.

    `integral`: the caller promises whole-number weights (bootstrap counts). Their sums are exact
    in any order, so only the sums between the places read are formed (one sparse product, no
    cumulative sum over all N) -- the same numbers, bit for bit, in a third of the time.
    `live`: the samples (columns) with a nonzero weight in some row; the others are left out of
    the running sums, which adding their zeros would not change (non-negative weights)."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]) + 1, len(s)]  # exclusive end of each tie group
    group_of = np.repeat(np.arange(len(ends)), np.diff(np.r_[0, ends]))
    pos_at = np.flatnonzero(positives[order])  # sorted positions of the positives
    groups = np.unique(group_of[pos_at])
    through, before = ends[groups], np.r_[0, ends[:-1]][groups]
    if integral:
        return _at_places_integral(order, positives, through, before, weights)
    if live is None:
        kept, rows = None, order
    else:  # a place whose weight is 0 in every row adds exactly nothing to a running sum: skipped
        kept = np.flatnonzero(live[order])  # the places summed
        rows = order[kept]
        pos_at = kept[np.flatnonzero(positives[rows])]
    w = weights.T[rows]  # (N, b), contiguous rows when weights are column-major (Resamples)
    total = np.zeros((w.shape[0] + 1, w.shape[1]))
    np.cumsum(w, axis=0, out=total[1:])  # row after row: vectorised across the b resamples
    pos = np.zeros((len(pos_at) + 1, w.shape[1]))
    np.cumsum(w[np.flatnonzero(positives[rows])], axis=0, out=pos[1:])

    def positives_through(end: np.ndarray) -> np.ndarray:
        return pos[np.searchsorted(pos_at, end)].T

    def total_through(end: np.ndarray) -> np.ndarray:
        return (total[end] if kept is None else total[np.searchsorted(kept, end)]).T

    return (positives_through(through), total_through(through), positives_through(before), total_through(before),
            pos[-1], total[-1])


def _at_places_integral(
    order: np.ndarray, positives: np.ndarray, through: np.ndarray, before: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_at_positive_groups` for whole-number weights: the positive and total weight of the samples
    in the first `e` places of `order`, for e in `through` and in `before`, from the sums over
    the stretches between consecutive places read (a sparse (2S, N) x (N, b) product) and a
    cumulative sum over those S stretches. Exact, as every partial sum is a whole number < 2**53."""
    n = len(order)
    cuts = np.unique(np.r_[through, before, n])  # the places read, ascending
    stretch = np.empty(n, dtype=np.intp)
    stretch[order] = np.searchsorted(cuts, np.arange(n), side="right")  # stretch k: cuts[k-1] <= place < cuts[k]
    rows = len(cuts) + 1
    pos_idx = np.flatnonzero(positives)
    select = sparse.csr_matrix(
        (np.ones(n + len(pos_idx)), (np.r_[stretch, rows + stretch[pos_idx]], np.r_[np.arange(n), pos_idx])),
        shape=(2 * rows, n),
    )
    sums = np.asarray(select @ weights.T)  # (2 * rows, b): total, then positive, weight per stretch
    total = np.cumsum(sums[:rows], axis=0)  # total[k]: weight of the places before cuts[k]
    pos = np.cumsum(sums[rows:], axis=0)

    def at(cum: np.ndarray, places: np.ndarray) -> np.ndarray:
        return cum[np.searchsorted(cuts, places)].T

    return at(pos, through), at(total, through), at(pos, before), at(total, before), pos[-2], total[-2]


def _expected_hits(pos: np.ndarray, group: np.ndarray, before: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Expected positive weight among the k highest under random tie-breaking: a tie group wholly
    above the k-th place counts whole, the group holding it by the fraction of it that fits."""
    fit = np.divide(k[:, None] - before, group, out=np.zeros_like(group), where=group > 0)
    return (pos * np.clip(fit, 0.0, 1.0)).sum(axis=1)


def weighted_detection(
    positives: np.ndarray, scores: np.ndarray, weights: np.ndarray, integral: bool = False,
    live: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """AUROC, AUPRC and precision at k (k = positive weight) for each row of weights (b, N).
    Two hints give the same numbers faster: `integral`, the weights are whole numbers (bootstrap
    counts); `live`, the (N,) mask of samples with a nonzero weight in some row (when many are
    zero everywhere, as the privacy task's flag copies)."""
    positives = np.asarray(positives, dtype=bool)
    weights = np.atleast_2d(weights)
    nan = np.full(weights.shape[0], np.nan)
    # all NaN: no ranking (NaN); +-inf still rank (the point estimate, detection_metrics, ranks them)
    if np.isnan(np.asarray(scores, dtype=np.float64)).all() or not positives.any():
        return {m: nan.copy() for m in DETECTION}
    tp, seen, tp_before, seen_before, n_pos, n_all = _at_positive_groups(positives, _dense_ranks(scores), weights,
                                                                         integral, live)
    n_neg = n_all - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    pos, group = tp - tp_before, seen - seen_before  # each group's positive and total weight
    fp, neg = seen - tp, group - pos
    auc = (pos * (n_neg[:, None] - fp + 0.5 * neg)).sum(axis=1)  # negatives below + half the tied
    ap = (pos * np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)).sum(axis=1)
    hits = _expected_hits(pos, group, seen_before, n_pos)
    return {
        "auroc": np.divide(auc, n_pos * n_neg, out=nan.copy(), where=ok),
        "auprc": np.divide(ap, n_pos, out=nan.copy(), where=ok),
        "precision_at_k": np.divide(hits, n_pos, out=nan.copy(), where=ok),
    }


def precision_at_k(positives: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Expected fraction of positives among the k highest scores under random tie-breaking."""
    positives = np.asarray(positives, dtype=bool)
    if k <= 0 or np.isnan(np.asarray(scores, dtype=np.float64)).all():
        return float("nan")
    if not positives.any():
        return 0.0
    ones = np.ones((1, len(positives)))
    tp, seen, tp_before, seen_before, _, _ = _at_positive_groups(positives, _dense_ranks(scores), ones)
    places = np.array([min(k, len(positives))], dtype=np.float64)
    return float(_expected_hits(tp - tp_before, seen - seen_before, seen_before, places)[0] / k)


def detection_metrics(positives: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The point estimates a detection row reports (the bootstrap's replicates are `detection_boot`'s):
    scikit-learn's AUROC and AUPRC on the scores' dense ranks, so NaN (unscored) ranks lowest instead of
    failing scikit-learn's check, and precision at k = the number of positives. NaN for every metric
    when there is no ranking (all NaN) or a single class."""
    positives = np.asarray(positives, dtype=bool)
    if positives.all() or not positives.any() or np.isnan(np.asarray(scores, dtype=np.float64)).all():
        return {m: float("nan") for m in DETECTION}
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = _dense_ranks(scores)
    return {
        "auroc": float(roc_auc_score(positives, s)),
        "auprc": float(average_precision_score(positives, s)),
        "precision_at_k": precision_at_k(positives, s, int(positives.sum())),
    }


def detection_boot(positives: np.ndarray, scores: np.ndarray, resamples: Resamples) -> dict[str, np.ndarray]:
    """The detection metrics on each of the B resamples: {metric: (B,)}."""
    return resamples.apply(lambda w: weighted_detection(positives, scores, w, integral=True))
