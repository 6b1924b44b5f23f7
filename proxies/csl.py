"""Cumulative Sample Loss, the free variant: the training pass's own losses, summed."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


@register_proxy
class CSL(Proxy):
    name = "csl"
    description = "Cumulative Sample Loss: sum over epochs of the training-pass loss (free)"
    citation = "Ravikumar et al., Towards Memorization Estimation: Fast, Formal and Free, ICML 2025"
    recorders = (RecorderRequest.of("train_loss"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nansum(float64_record(ctx.arrays(self.recorders[0])["loss"]), axis=0)
