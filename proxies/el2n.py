"""EL2N (Paul et al. 2021): error-vector norm, averaged over an early window of training."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


@register_proxy
class EL2N(Proxy):
    name = "el2n"
    description = "||softmax - onehot(label)||_2 in the training pass, mean over the first 10% of epochs"
    citation = "Paul et al., Deep Learning on a Data Diet, NeurIPS 2021"
    defaults = {"window": 0.1}
    recorders = (RecorderRequest.of("train_prob"),)

    def validate(self) -> None:
        self.check_number("window", 0.0, 1.0)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        el2n = ctx.arrays(self.recorders[0])["el2n"]
        first = max(1, int(round(float(self.params["window"]) * el2n.shape[0])))
        return np.nanmean(el2n[:first], axis=0)
