"""Loss at the last checkpoint: the cheapest baseline, and trivial before memorization sets in.

The float32 cross entropy carries an absolute rounding of ~6e-8, so below 1e-3 it loses digits
and past a margin of ~16.6 nats it is exactly 0: on the default digits run 15 % of the samples
tied at 0. There the loss is taken from the recorded phi = logit_y − logsumexp of the other
logits instead, as −log p_y = log(1 + e^−phi), exact at any margin; larger losses keep the
recorded value (runs stored before phi existed keep it everywhere).
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy

#: Below this a float32 loss or 1 − p(label) is rounding more than 6e-5 of itself: take it from phi.
EXACT_BELOW = 1e-3


def exact_where_small(recorded: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """`recorded` (float32), with `exact` (float64 from phi) where it is below EXACT_BELOW."""
    recorded = np.asarray(recorded, dtype=np.float64)
    return np.where(recorded < EXACT_BELOW, exact, recorded)


@register_proxy
class FinalLoss(Proxy):
    name = "final_loss"
    description = "eval-pass loss at the last epoch checkpoint"
    citation = "baseline (Ravikumar et al., ICML 2025, Table 2)"
    recorders = (RecorderRequest.of("eval_pass", epochs="last"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        arrays = ctx.arrays(self.recorders[0])
        loss = arrays["loss"][-1]
        if "phi" not in arrays:
            return loss
        return exact_where_small(loss, np.logaddexp(0.0, -np.asarray(arrays["phi"][-1], dtype=np.float64)))
