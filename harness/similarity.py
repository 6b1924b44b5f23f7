"""Memorization similarity (paper Tables 1 and 4): how closely a proxy tracks a reference.

Cosine similarity is reported because the paper does, but for non-negative vectors it is
inflated (two unrelated positive vectors already score high), so Pearson and Spearman are
reported beside it. The top-k variants look only at the samples the reference calls most
memorized, where a proxy is actually used.

Every statistic is a weighted one, so the same code gives the point estimate (weight 1 per
sample) and the bootstrap replicates (weight = how often a resample drew the sample):
weighted cosine, Pearson from weighted moments, Spearman = weighted Pearson of weighted
mid-ranks (the ranks of the resampled multiset, ties averaged). With unit weights these are
exactly numpy's and scipy's statistics.

Top-k without index bias (methods.md: the expected value under random tie-breaking): the top-k
set is the k samples with the highest reference; when the k-th place falls inside a group of tied
reference values, the places left go to members of that group drawn at random, never by position
in the dataset. Correlations are not linear in the set, so the point estimate is the mean over
TIE_DRAWS seeded draws (giving each tied member the average weight instead, places left / group
size, is another statistic: 0.53 instead of 0.61 for a cosine measured with 254 samples tied at the
cut-off); each bootstrap resample takes one draw of its own. Without a tie at the cut-off there is
nothing to draw and the set is the plain top k.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from harness.bootstrap import Resamples
from harness.errors import HarnessError

SIMILARITY = ("cosine", "pearson", "spearman")
METRICS = (*SIMILARITY, *(f"{m}_topk" for m in SIMILARITY))


def _sorted_groups(x: np.ndarray, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-x if descending else x, kind="stable")
    s = x[order]
    return order, np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def _group_bounds(order: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each sample (original order): the sorted positions where its tie group starts and ends."""
    sizes = np.diff(np.r_[starts, len(order)])
    lo, hi = np.empty(len(order), dtype=np.intp), np.empty(len(order), dtype=np.intp)
    lo[order] = np.repeat(starts, sizes)
    hi[order] = np.repeat(starts + sizes, sizes)
    return lo, hi


def _cumulative(weights: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(b, N + 1): weight of the first j samples in `order`, per row."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1))
    np.cumsum(weights[:, order], axis=1, out=out[:, 1:])
    return out


def weighted_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of x in the weighted multiset, per row of weights (b, N): weight strictly below
    plus half the tied weight (ranks up to a constant, which no correlation sees)."""
    order, starts = _sorted_groups(x)
    lo, hi = _group_bounds(order, starts)
    c = _cumulative(weights, order)
    return (np.take(c, lo, axis=1) + np.take(c, hi, axis=1)) / 2


#: Random tie-breaks averaged for a top-k point estimate when the k-th place is tied (seeded), drawn
#: in blocks of _TIE_BLOCK rows. The estimate's Monte Carlo error is the spread of the metric over
#: tie-breaks / 32: 0.003 where that spread is 0.1 (254 samples tied for 9 places, measured).
TIE_DRAWS = 1024
TIE_SEED = 20250
_TIE_BLOCK = 128
#: Tie-break keys (float64) per piece of rows in `_break_ties`: (rows, tied columns, copies) of a
#: bootstrap chunk reached 83 x 45,000 x 10 at CIFAR scale (90 % of a reference tied at the cut-off).
_TIE_ELEMENTS = 1 << 22


def top_k_weights(reference: np.ndarray, weights: np.ndarray, k: float | np.ndarray,
                  ties: np.random.Generator | None = None) -> np.ndarray:
    """Weights (b, N) of the top-k set by reference within each weighted resample: whole weight
    above the k-th place, 0 below. The tie group at the k-th place: without `ties`, each member by
    the fraction of the group that fits (its expected membership, which makes a statistic linear
    in the weights, such as a count of flagged samples, its exact expectation); with `ties` (whole-
    number weights), the places left filled by a random choice of the group's elements in each
    row (one draw of the tie-breaking of the resampled multiset, `_break_ties`)."""
    order, starts = _sorted_groups(reference, descending=True)
    lo, hi = _group_bounds(order, starts)
    c = _cumulative(weights, order)
    before, group = np.take(c, lo, axis=1), np.take(c, hi, axis=1)
    total = group - before
    frac = np.divide(k - before, total, out=np.zeros_like(total), where=total > 0)
    top = weights * np.clip(frac, 0.0, 1.0)
    if ties is not None:
        _break_ties(top, weights, (frac > 0) & (frac < 1) & (weights > 0), k - before, ties)
    return top


def _break_ties(top: np.ndarray, weights: np.ndarray, partial: np.ndarray, left: np.ndarray,
                ties: np.random.Generator) -> None:
    """In place: in each row, the places left (`left`: k minus the weight above the boundary group)
    go to a uniformly random choice of the group's *elements*, a sample drawn m times by the
    resample being m tied elements -- a random tie-break of the resampled multiset, whose expected
    membership is the fractional one (`top_k_weights` without `ties`). Ordering the samples
    instead, each taking its whole weight, gave a sample drawn twice the chance of one drawn once
    (1/2 instead of 2/3 for one place between counts 2 and 1). Weights are whole numbers (counts)."""
    cols = np.flatnonzero(partial.any(axis=0))
    if not len(cols):
        return
    p = partial[:, cols]
    w = np.where(p, weights[:, cols], 0.0)
    room = np.ceil(np.where(p, left[:, cols], 0.0).max(axis=1)).astype(np.intp)  # elements taken per row
    copies = int(w.max())
    step = max(1, _TIE_ELEMENTS // max(1, len(cols) * copies))
    for start in range(0, len(w), step):  # rows in pieces: the same keys in the same order, less memory
        rows = slice(start, start + step)
        keys = ties.random((*w[rows].shape, copies))  # one key per element: copy j of a sample exists if j < count
        keys[np.arange(copies) >= w[rows, :, None]] = np.inf
        flat = keys.reshape(len(keys), -1)
        take = room[rows, None]
        last = np.take_along_axis(np.sort(flat, axis=1), np.clip(take - 1, 0, flat.shape[1] - 1), axis=1)
        chosen = (flat <= last) & (take > 0) & (flat < np.inf)  # the `take` smallest keys (distinct a.s.)
        top[rows, cols] = np.where(p[rows], chosen.reshape(keys.shape).sum(axis=2), top[rows, cols])


#: Distinct samples a statistic needs before it says anything: a Pearson or Spearman of two samples
#: is +-1 and a cosine of one sample is its sign, whatever the proxy, so below these counts (a top-k
#: set of k = 2 at N = 20, a resample that drew two samples) the metric is NaN, not a perfect score.
MIN_SAMPLES = {"cosine": 2, "pearson": 3, "spearman": 3}

#: A weighted variance this small relative to the mean square is a constant vector up to
#: rounding (a constant's variance from weighted sums is ~1e-16 of its square, not exactly 0).
FLAT = 1e-10


def _dot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-row weighted sum: a matrix-vector product for a shared (N,) vector, else rowwise."""
    return w @ x if x.ndim == 1 else np.einsum("bn,bn->b", w, x)


def _moments(x: np.ndarray, w: np.ndarray, sw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean, variance and "constant on the support" flag per row of w."""
    mean = _dot(w, x) / sw
    square = _dot(w, x * x) / sw
    var = square - mean**2
    return mean, var, var <= FLAT * np.maximum(square, np.finfo(float).tiny)


class _Side:
    """One vector's weighted moments under a weight matrix, kept to pair with many proxies."""

    def __init__(self, x: np.ndarray, w: np.ndarray, sw: np.ndarray) -> None:
        self.x = x
        self.mean, self.var, self.flat = _moments(x, w, sw)


def _support(w: np.ndarray) -> np.ndarray:
    """Distinct samples (columns with a positive weight) per row: what a statistic can tell apart."""
    return np.count_nonzero(w > 0, axis=1)


def _pearson(a: _Side, b: _Side, w: np.ndarray, sw: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Weighted Pearson per row; NaN where either side is constant on the support, or where the
    support (`_support(w)`) holds fewer than MIN_SAMPLES["pearson"] samples (two points always lie
    on a line)."""
    if a.x.ndim == 1 and b.x.ndim == 1:
        cross = w @ (a.x * b.x)
    else:
        cross = np.einsum("bn,bn,bn->b", w, np.broadcast_to(a.x, w.shape), np.broadcast_to(b.x, w.shape))
    cov = cross / sw - a.mean * b.mean
    ok = ~(a.flat | b.flat) & (support >= MIN_SAMPLES["pearson"])
    r = np.divide(cov, np.sqrt(np.abs(a.var * b.var)), out=np.full(len(w), np.nan), where=ok)
    return np.clip(r, -1.0, 1.0)


def _cosine(a: np.ndarray, b: np.ndarray, w: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Weighted cosine per row; NaN when either vector is all zeros on the support, or the support
    is a single sample (whose cosine is the sign of proxy x reference, whatever the proxy)."""
    norm = np.sqrt((w @ (a * a)) * (w @ (b * b)))
    ok = (norm > 0) & (support >= MIN_SAMPLES["cosine"])
    return np.divide(w @ (a * b), norm, out=np.full(len(w), np.nan), where=ok)


def _centered(x: np.ndarray, w: np.ndarray, sw: np.ndarray, per_row: bool) -> np.ndarray:
    """x minus its mean: over all samples (one vector), or, `per_row`, its weighted mean in each
    row of w (a (b, columns) matrix). Correlations are shift-invariant, but the constant-vector test
    (FLAT) compares the variance with the mean square: a top-k set far from the overall mean and
    narrow beside that offset (a reference at 1 +- 1e-6 where the rest is below 0.5, a proxy at
    1e6 +- 0.01) read as constant when centred over all N, and its correlations as NaN. The top-k
    part is centred per row, as its rows select different samples (~k columns, cheap)."""
    if not per_row:
        return x - x.mean()
    mean = np.divide(w @ x, sw, out=np.zeros(len(w)), where=sw > 0)
    return x[None, :] - mean[:, None]


class ReferenceSide:
    """The reference's side of every metric under one weight matrix: its moments, its mid-ranks
    and the top-k weights, computed once and paired with each proxy (`metrics`). `top_k=False`
    leaves out the top-k part (its metrics are then not computed); `metrics(proxy, which)` computes
    only the metrics named in `which` (a subset of SIMILARITY), each exactly as when all are asked."""

    def __init__(self, reference: np.ndarray, weights: np.ndarray, k: float | np.ndarray, top_k: bool = True,
                 ties: np.random.Generator | None = None) -> None:
        self.raw = reference
        parts: list[tuple[str, slice | np.ndarray, np.ndarray]] = [("", slice(None), weights)]
        if top_k:
            top = top_k_weights(reference, weights, k, ties)
            used = np.asarray((top > 0).any(axis=0))  # ~k of N columns: the top-k metrics only look at these
            parts.append(("_topk", used, top[:, used]))
        self.parts = {}
        for suffix, cols, w in parts:
            sw = w.sum(axis=1)
            ranks = weighted_ranks(reference[cols], w)
            centered = _centered(reference[cols], w, sw, per_row=bool(suffix))
            self.parts[suffix] = (cols, w, sw, _Side(centered, w, sw), _Side(ranks, w, sw), _support(w))

    @property
    def flat(self) -> np.ndarray:
        """Per row of weights: the reference is constant over all its samples (it ranks nothing)."""
        return self.parts[""][3].flat

    def metrics(self, proxy: np.ndarray, which: tuple[str, ...] = SIMILARITY) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for suffix, (cols, w, sw, ref, ref_ranks, support) in self.parts.items():
            if not np.isfinite(proxy).all():  # a proxy bug: every metric NaN
                out.update({f"{m}{suffix}": np.full(len(w), np.nan) for m in SIMILARITY if m in which})
                continue
            if "cosine" in which:
                out[f"cosine{suffix}"] = _cosine(proxy[cols], self.raw[cols], w, support)
            if "pearson" in which:
                centered = _centered(proxy[cols], w, sw, per_row=bool(suffix))
                out[f"pearson{suffix}"] = _pearson(_Side(centered, w, sw), ref, w, sw, support)
            if "spearman" in which:
                out[f"spearman{suffix}"] = _pearson(_Side(weighted_ranks(proxy[cols], w), w, sw), ref_ranks, w, sw,
                                                   support)
        return out


def weighted_similarity(
    proxy: np.ndarray, reference: np.ndarray, weights: np.ndarray, k: float
) -> dict[str, np.ndarray]:
    """All six metrics per row of weights (b, N); proxy and reference already without NaN
    reference entries. A non-finite proxy value (a proxy bug) makes every metric NaN."""
    return ReferenceSide(reference, np.atleast_2d(weights), k).metrics(proxy)


def _prepare(
    proxy: np.ndarray, reference: np.ndarray, top_k: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    proxy = np.asarray(proxy, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if proxy.ndim != 1 or proxy.shape != reference.shape:
        raise HarnessError(
            f"proxy and reference must be 1-D of equal length, got {proxy.shape} and {reference.shape}"
        )
    keep = ~np.isnan(reference)
    return proxy[keep], reference[keep], keep, top_k_count(int(keep.sum()), top_k)


def top_k_count(n: int, top_k: int | None) -> int:
    """The size of the top-k set among n samples: `top_k`, or 10 % of n (at least 1), at most n."""
    k = max(1, round(0.1 * n)) if top_k is None else int(top_k)
    if k < 1:
        raise HarnessError(f"top_k must be >= 1, got {top_k}")
    return min(k, n)


def similarity_metrics(proxy: np.ndarray, reference: np.ndarray, top_k: int | None = None) -> dict[str, float]:
    """cosine, pearson, spearman on all samples, and the same with suffix ``_topk`` on the top_k
    samples by reference (default max(1, round(0.1 * N)); a tie at the k-th place is broken at
    random, the metric the mean over TIE_DRAWS seeded draws).

    Samples whose reference is NaN (e.g. stability estimates that no model left out) are
    dropped from both vectors before anything is computed; N is the count that remains. A NaN
    in the proxy is not dropped: it is a proxy bug and shows up as NaN metrics.
    """
    return similarity_table({"proxy": proxy}, reference, top_k)["proxy"]


def similarity_table(scores: dict[str, np.ndarray], reference: np.ndarray,
                     top_k: int | None = None) -> dict[str, dict[str, float]]:
    """`similarity_metrics` of every proxy, the reference's side (and its tie draws) computed once."""
    prepared = {name: _prepare(s, reference, top_k) for name, s in scores.items()}
    if not prepared:
        return {}
    _, ref, _, k = next(iter(prepared.values()))
    draws = _tie_draws(ref, k)
    side = ReferenceSide(ref, np.ones((1, len(ref))), k, top_k=draws is None)  # a tied top k: from the draws
    out = {name: {m: float(v[0]) for m, v in side.metrics(p).items()} for name, (p, _, _, _) in prepared.items()}
    if draws is not None:  # the k-th place is tied: the top-k metrics are means over random tie-breaks
        cols, chunks = draws
        sums: dict[str, dict[str, float]] = {name: {} for name in prepared}
        for w in chunks:
            drawn = ReferenceSide(ref[cols], w, k, top_k=False)
            for name, (p, _, _, _) in prepared.items():
                for metric, v in drawn.metrics(p[cols]).items():
                    sums[name][f"{metric}_topk"] = sums[name].get(f"{metric}_topk", 0.0) + float(v.sum())
        for name, metrics in sums.items():
            out[name].update({m: total / TIE_DRAWS for m, total in metrics.items()})
    return out


def _tie_draws(reference: np.ndarray, k: float) -> tuple[np.ndarray, Iterator[np.ndarray]] | None:
    """None when the k-th place is not tied; else the columns that can be in the top k (those above
    the tie group and the group) and TIE_DRAWS rows of unit weights on them, in blocks: each row the
    samples above plus a random choice of the places left among the tied ones."""
    top = top_k_weights(reference, np.ones((1, len(reference))), k)[0]
    group = (top > 0) & (top < 1)
    if not group.any():
        return None
    cols = np.flatnonzero(top > 0)
    tied = group[cols]
    places = int(round(top[group].sum()))

    def blocks() -> Iterator[np.ndarray]:
        ties = np.random.default_rng(TIE_SEED)
        for start in range(0, TIE_DRAWS, _TIE_BLOCK):
            rows = min(_TIE_BLOCK, TIE_DRAWS - start)
            chosen = np.argsort(ties.random((rows, int(tied.sum()))), axis=1)[:, :places]
            in_group = np.zeros((rows, int(tied.sum())))
            np.put_along_axis(in_group, chosen, 1.0, axis=1)
            w = np.ones((rows, len(cols)))
            w[:, tied] = in_group
            yield w

    return cols, blocks()


def similarity_boot(
    scores: dict[str, np.ndarray], reference: np.ndarray, resamples: Resamples, top_k: int | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Every proxy's six metrics on each of the B resamples of all N samples: {proxy: {metric:
    (B,)}}. Samples with a NaN reference are dropped from every resample, as from the point
    estimate; the reference's side is computed once per block of resamples, not per proxy."""
    prepared = {name: _prepare(s, reference, top_k) for name, s in scores.items()}
    if not prepared:
        return {}
    _, ref, keep, k = next(iter(prepared.values()))
    parts: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in prepared}
    ties = np.random.default_rng(TIE_SEED)  # one tie-break per resample, drawn in resample order
    for w in resamples.chunks():
        side = ReferenceSide(ref, w[:, keep], k, ties=ties)
        for name, (p, _, _, _) in prepared.items():
            for metric, v in side.metrics(p).items():
                parts[name].setdefault(metric, []).append(v)
    return {name: {m: np.concatenate(v) for m, v in d.items()} for name, d in parts.items()}
