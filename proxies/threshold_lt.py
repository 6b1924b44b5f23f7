"""Threshold learning time: the epoch at which a sample is first classified correctly.

Later learning = higher score (the released notebook had the sign reversed).
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


def threshold_learning_time(correct: np.ndarray) -> np.ndarray:
    """correct: (E, N), NaN where not presented. First correct epoch (0-based) / E; never correct
    -> 1; never presented (a sample the user's loop skipped, in the tracker) -> NaN, not 1: a sample
    nobody saw is no evidence of late learning."""
    correct = np.asarray(correct, dtype=np.float64)
    c = np.nan_to_num(correct, nan=0.0) > 0.5
    epochs = c.shape[0]
    first = np.where(c.any(axis=0), c.argmax(axis=0), epochs) / epochs
    return np.where(np.isnan(correct).all(axis=0), np.nan, first)


@register_proxy
class ThresholdLearningTime(Proxy):
    name = "threshold_lt"
    description = "first epoch (0-based) at which the training-pass prediction is correct, / E (never -> 1)"
    citation = "Jiang et al. 2021; Maini et al., Characterizing Datapoints via Second-Split Forgetting, NeurIPS 2022"
    recorders = (RecorderRequest.of("train_correct"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return threshold_learning_time(ctx.arrays(self.recorders[0])["correct"])
