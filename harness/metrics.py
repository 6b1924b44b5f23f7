"""Detection metrics, from scikit-learn; NaN scores (a proxy that could not score a sample) rank lowest."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _clean(scores: np.ndarray) -> np.ndarray:
    """NaN (could not score) ranks below every finite score; +inf above, -inf below."""
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    lo, hi = np.min(finite, initial=0.0), np.max(finite, initial=0.0)
    return np.where(np.isnan(s), lo - 2.0, np.clip(s, lo - 1.0, hi + 1.0))


def precision_at_k(positives: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of positives among the k highest scores (ties broken by sample order)."""
    top = np.argsort(-_clean(scores), kind="stable")[:k]
    return float(np.asarray(positives)[top].mean()) if k > 0 else float("nan")


def detection_metrics(positives: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    positives = np.asarray(positives, dtype=bool)
    if positives.all() or not positives.any():
        return {"auroc": float("nan"), "auprc": float("nan"), "precision_at_k": float("nan")}
    s = _clean(scores)
    return {
        "auroc": float(roc_auc_score(positives, s)),
        "auprc": float(average_precision_score(positives, s)),
        "precision_at_k": precision_at_k(positives, s, int(positives.sum())),
    }
