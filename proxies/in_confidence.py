"""In-confidence: how little probability the final model gives the label (paper App. B.5).

`variant="given"` (default) uses the given label as the paper defines it; `variant="max"` is the
released code's 1 − max softmax, which ignores the label.

The float32 p_y rounds to exactly 1 once the margin passes ~16.6 nats, which tied every
confidently fitted sample at 0 (15 % of the default digits run). Where 1 − p_y is that small
(below `EXACT_BELOW`) it is taken from the recorded phi = logit_y − logsumexp of the other
logits, as 1 / (1 + e^phi), exact at any margin; where the label is the prediction, p_max is p_y
and the max variant does the same. Runs stored before phi existed keep the float32 values.
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.final_loss import exact_where_small
from proxies.registry import register_proxy


def one_minus_p_label(phi: np.ndarray) -> np.ndarray:
    """1 − p_y = Σ_{j≠y} p_j = 1 / (1 + e^phi) in float64, exact at any margin."""
    return np.exp(-np.logaddexp(0.0, np.asarray(phi, dtype=np.float64)))


@register_proxy
class InConfidence(Proxy):
    name = "in_confidence"
    description = "1 - softmax probability of the given label at the last checkpoint (eval pass)"
    citation = "Carlini et al. 2019 via Ravikumar et al., ICML 2025, App. B.5"
    defaults = {"variant": "given"}
    recorders = (RecorderRequest.of("eval_pass", epochs="last"),)

    def validate(self) -> None:
        self.check_choice("variant", ("given", "max"))

    def score(self, ctx: ScoreContext) -> np.ndarray:
        arrays = ctx.arrays(self.recorders[0])
        given = self.params["variant"] == "given"
        recorded = 1.0 - float64_record(arrays["p_label" if given else "p_max"][-1])  # 1 - float32 rounds below p = 0.5
        if "phi" not in arrays:
            return recorded
        exact = exact_where_small(recorded, one_minus_p_label(arrays["phi"][-1]))
        if given:
            return exact
        return np.where(np.asarray(arrays["correct"][-1]) > 0.5, exact, recorded)
