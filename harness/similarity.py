"""Memorization similarity (paper Tables 1 and 4): how closely a proxy tracks a reference.

Cosine similarity is reported because the paper does, but for non-negative vectors it is
inflated (two unrelated positive vectors already score high), so Pearson and Spearman are
reported beside it. The top-k variants look only at the samples the reference calls most
memorized, where a proxy is actually used.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from harness.errors import HarnessError


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; NaN when either vector is all zeros (the angle is undefined)."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else float("nan")


def _is_constant(a: np.ndarray) -> bool:
    return a.size < 2 or bool(np.all(a == a[0]))


def _correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Cosine, Pearson, Spearman; correlations of a constant vector are NaN, checked up front
    so scipy's ConstantInputWarning never fires (one per proxy per seed would drown the log)."""
    out = {"cosine": _cosine(a, b)}
    if _is_constant(a) or _is_constant(b) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        out["pearson"] = out["spearman"] = float("nan")
    else:
        out["pearson"] = float(stats.pearsonr(a, b).statistic)
        out["spearman"] = float(stats.spearmanr(a, b).statistic)
    return out


def similarity_metrics(
    proxy: np.ndarray, reference: np.ndarray, top_k: int | None = None
) -> dict[str, float]:
    """cosine, pearson, spearman on all samples, and the same with suffix ``_topk`` on the
    top_k samples by reference (default max(1, round(0.1 * N))).

    Samples whose reference is NaN (e.g. stability estimates that no model left out) are
    dropped from both vectors before anything is computed; N is the count that remains. A NaN
    in the proxy is not dropped: it is a proxy bug and shows up as NaN metrics. Ties in the
    reference at the top-k boundary go to the lower sample index (stable sort).
    """
    proxy = np.asarray(proxy, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if proxy.ndim != 1 or proxy.shape != reference.shape:
        raise HarnessError(
            f"proxy and reference must be 1-D of equal length, got {proxy.shape} and "
            f"{reference.shape}"
        )
    keep = ~np.isnan(reference)
    proxy, reference = proxy[keep], reference[keep]
    n = len(reference)
    k = max(1, round(0.1 * n)) if top_k is None else int(top_k)
    if k < 1:
        raise HarnessError(f"top_k must be >= 1, got {top_k}")
    top = np.argsort(-reference, kind="stable")[: min(k, n)]
    metrics = _correlations(proxy, reference)
    metrics.update(
        {f"{name}_topk": v for name, v in _correlations(proxy[top], reference[top]).items()}
    )
    return metrics
