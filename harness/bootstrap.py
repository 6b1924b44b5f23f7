"""Confidence intervals and paired comparisons by the bootstrap (methods.md §3, last paragraph).

Method, as the leaderboard reports it:
1. Within one (task, setting, seed), B resamples of the N samples are drawn once, with
   replacement, from a generator seeded by (task, setting, seed) -- so a rerun draws the same
   resamples and every proxy of that setting is evaluated on the *same* resamples (paired).
   A resample is held as multinomial counts: sample i appears ``counts[b, i]`` times.
   Each metric is computed on all B resamples at once as a weighted statistic (AUROC as a
   weighted Mann-Whitney count, correlations from weighted moments and weighted mid-ranks):
   no per-sample or per-resample Python loop.
2. Across seeds, replicate b draws S seeds with replacement (one draw per replicate, shared by
   every proxy of the task, setting and metric) and averages one within-seed replicate of each
   drawn copy: the first copy of a seed uses its replicate b, the k-th copy its replicate
   (b + k - 1) mod B -- an independent resample, as a seed drawn twice stands for two runs with
   two independent samplings. (Reusing replicate b for every copy made the copies' sampling noise
   identical: with seeds that differ only by sampling noise the intervals were 1.5x too wide and
   covered 99.5 %.) The column choice is shared by every proxy, so the proxies stay paired. The
   95 % confidence interval is the 2.5 / 97.5 percentile interval of these B combined replicates,
   so it carries both the sample and the seed variation. (The seed stage also sees the sampling
   noise, once more, in the spread of the seeds' values: with S = 3 such seeds the intervals still
   cover about 98 %, conservative rather than too narrow.)
3. Paired test against the best proxy (best = highest mean; lowest for cost-like metrics): with
   the same seed draw, d_b averages proxy - best over the drawn copies of the seeds where *both*
   have a replicate (sign flipped when lower is better) -- paired over samples and seeds, so a
   proxy that failed a seed is compared on the seeds they share (taking the difference of the
   two seed means instead compared different seeds: missing a hard seed bought a proxy 0.15
   worse on every shared seed a tie). With every seed present it is the difference of the
   combined replicates. ``p_vs_best`` = fraction of replicates with d_b >= 0 (how often the
   proxy is at least as good as the best); ``tied_with_best`` = the 95 % percentile interval of d
   contains 0, or lies above it (a proxy better than the best on their shared seeds, whose mean
   is lower only because the best missed a hard seed, is not worse; the best is tied with itself).
Replicates whose metric is undefined (e.g. a resample without positives) are NaN and ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Float64 elements per chunk of resample weights (32 MiB): bounds memory at CIFAR scale
#: (B = 1,000 x N = 50,000) while keeping every chunk one vectorised computation.
CHUNK_ELEMENTS = 1 << 22
LEVEL = 0.95


def generator(*key: object) -> np.random.Generator:
    """A generator seeded by a stable hash of `key` (Python's hash() is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass(frozen=True)
class Resamples:
    """B bootstrap resamples of N samples as counts (B, N): how often each sample was drawn."""

    counts: np.ndarray

    @classmethod
    def draw(cls, n: int, b: int, *key: object) -> Resamples:
        """B resamples of size n, seeded by `key` (e.g. task, setting label, seed)."""
        rng = generator("resamples", n, b, *key)
        counts = np.empty((b, n), dtype=np.uint16)  # a count above 65,535 has probability ~0
        rows = max(1, CHUNK_ELEMENTS // max(n, 1))
        for start in range(0, b, rows):
            m = min(rows, b - start)
            idx = rng.integers(0, n, size=(m, n)) + (np.arange(m) * n)[:, None]
            counts[start : start + m] = np.bincount(idx.ravel(), minlength=m * n).reshape(m, n)
        return cls(counts)

    @property
    def b(self) -> int:
        return self.counts.shape[0]

    @property
    def n(self) -> int:
        return self.counts.shape[1]

    def chunks(self) -> Iterator[np.ndarray]:
        """Float64 weight blocks (b_chunk, N) covering the B resamples in order. Blocks are
        column-major, so gathering samples (columns) in a proxy's score order copies contiguous
        memory; a single block (B x N <= CHUNK_ELEMENTS, e.g. digits) is converted once and
        shared by every proxy of the setting."""
        if self.b * self.n <= CHUNK_ELEMENTS:
            yield self._single
            return
        rows = max(1, CHUNK_ELEMENTS // max(self.n, 1))
        for start in range(0, self.b, rows):
            yield np.asfortranarray(self.counts[start : start + rows], dtype=np.float64)

    @cached_property
    def _single(self) -> np.ndarray:
        return np.asfortranarray(self.counts, dtype=np.float64)

    def apply(self, fn: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """`fn(weights) -> {metric: (b_chunk,)}` over all chunks, concatenated to (B,) arrays."""
        parts: dict[str, list[np.ndarray]] = {}
        for w in self.chunks():
            for k, v in fn(w).items():
                parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
        return {k: np.concatenate(v) for k, v in parts.items()}


def combine_seeds(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """values (P, S, B): P proxies' replicates for S seeds -> (P, B) replicates of the seed mean,
    each replicate b averaging the seeds of one with-replacement draw shared by all proxies, each
    drawn copy with its own within-seed replicate (`_copy_columns`). A missing value (NaN) is left
    out of that replicate's mean."""
    p, s, b = values.shape
    draw = rng.integers(0, s, size=(b, s))
    picked = values[:, draw, _copy_columns(draw)]  # (P, B, S)
    counts = np.isfinite(picked).sum(axis=2)
    total = np.where(np.isfinite(picked), picked, 0.0).sum(axis=2)
    return np.divide(total, counts, out=np.full((p, b), np.nan), where=counts > 0)


def _copy_columns(draw: np.ndarray) -> np.ndarray:
    """draw (B, S) seed indices -> (B, S) within-seed replicate columns: (b + k) mod B for the
    k-th earlier copy of the same seed in row b, so that copies of one seed never share a resample
    (when B >= S) while each seed's first copy keeps replicate b. Replicates of a seed are i.i.d.,
    so a shifted column is as independent as a fresh draw, and no extra random numbers are used."""
    b, s = draw.shape
    same = draw[:, :, None] == draw[:, None, :]  # (B, S, S): positions j and j' hold one seed
    earlier = np.tril(same, k=-1).sum(axis=2)  # copies of draw[b, j] before position j
    return (np.arange(b)[:, None] + earlier) % b


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along the last axis, ignoring NaN replicates (all NaN -> NaN)."""
    tail = 100 * (1 - level) / 2
    reps = np.asarray(replicates, dtype=np.float64)
    finite = np.asarray(np.isfinite(reps).any(axis=-1))  # an array even when reps is one row
    safe = np.where(finite[..., None], reps, 0.0)
    low, high = np.nanpercentile(safe, [tail, 100 - tail], axis=-1)
    return np.where(finite, low, np.nan), np.where(finite, high, np.nan)


def paired_differences(values: np.ndarray, best: int, rng: np.random.Generator) -> np.ndarray:
    """values (P, S, B) -> (P, B) replicates of proxy minus `best`, each averaging the difference
    over the drawn seeds where both have a value (`combine_seeds` of the per-seed differences):
    paired over seeds as well as samples. `rng` must draw as the one that made the proxies'
    replicates (the same key), so the comparison reads the very draws their intervals did."""
    return combine_seeds(values - values[best], rng)


def compare_differences(
    diff: np.ndarray, higher_is_better: bool = True, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """diff (P, B), replicates of each proxy minus the best -> (p_vs_best, tied_with_best).

    p_vs_best: fraction of replicates in which the proxy is at least as good as the best;
    tied_with_best: the `level` percentile interval of the difference contains 0 or lies above
    it (not worse than the best). A proxy without finite paired replicates gets NaN and False."""
    if not higher_is_better:
        diff = -diff
    valid = np.isfinite(diff)
    n_valid = valid.sum(axis=1)
    p = np.divide((diff >= 0).sum(axis=1, where=valid), n_valid, out=np.full(len(diff), np.nan),
                  where=n_valid > 0)
    _, high = percentile_interval(diff, level)
    return p, high >= 0  # NaN (no finite replicate) compares False
