"""Loss at the last checkpoint: the cheapest baseline, and trivial before memorization sets in."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


@register_proxy
class FinalLoss(Proxy):
    name = "final_loss"
    description = "eval-pass loss at the last epoch checkpoint"
    citation = "baseline (Ravikumar et al., ICML 2025, Table 2)"
    recorders = (RecorderRequest.of("eval_pass", epochs="last"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return ctx.arrays(self.recorders[0])["loss"][-1]
