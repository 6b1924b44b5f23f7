"""Learning time from the seed paper (Eq. 7, threshold from App. B.4 Eq. 17).

With g_t = ‖∇ₓℓ(w_t, z)‖² at checkpoints t = 1..E, the running mean m_T = (1/T) Σ_{t≤T} g_t; the
threshold τ is the mean of m_T over all T and all samples; a sample's learning time is the first T
with m_T ≤ τ, divided by E (never -> 1). Learned later = higher score.
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


def learning_time(sq: np.ndarray) -> np.ndarray:
    """sq: (E, N) squared input-gradient norms per checkpoint. Returns first T (1-based) with
    running mean ≤ τ, divided by E; samples whose running mean never drops to τ get 1."""
    sq = np.asarray(sq, dtype=np.float64)
    epochs = sq.shape[0]
    running = np.cumsum(sq, axis=0) / np.arange(1, epochs + 1)[:, None]
    below = running <= running.mean()
    first = np.where(below.any(axis=0), below.argmax(axis=0) + 1, epochs)
    return first / epochs


@register_proxy
class LearningTime(Proxy):
    name = "learning_time"
    description = "first checkpoint where the running mean of squared input-gradient norms is <= its global mean, / E"
    citation = "Ravikumar et al., Towards Memorization Estimation: Fast, Formal and Free, ICML 2025 (Eq. 7, 17)"
    recorders = (RecorderRequest.of("input_grads"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return learning_time(ctx.arrays(self.recorders[0])["sq"])
