"""In-confidence: how little probability the final model gives the label (paper App. B.5).

`variant="given"` (default) uses the given label as the paper defines it; `variant="max"` is the
released code's 1 − max softmax, which ignores the label.
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


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
        key = "p_label" if self.params["variant"] == "given" else "p_max"
        return 1.0 - ctx.arrays(self.recorders[0])[key][-1]
