"""Forgetting events (Toneva et al. 2019): how often a learned sample is lost again."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


def forgetting_counts(correct: np.ndarray) -> np.ndarray:
    """correct: (E, N) training-pass correctness. Never-correct samples get E, above any real count."""
    c = np.nan_to_num(correct, nan=0.0) > 0.5
    events = (c[:-1] & ~c[1:]).sum(axis=0).astype(np.float64)
    events[~c.any(axis=0)] = c.shape[0]
    return events


@register_proxy
class Forgetting(Proxy):
    name = "forgetting"
    description = "number of correct->incorrect transitions across training-pass presentations"
    citation = "Toneva et al., An Empirical Study of Example Forgetting, ICLR 2019"
    recorders = (RecorderRequest.of("train_correct"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return forgetting_counts(ctx.arrays(self.recorders[0])["correct"])
