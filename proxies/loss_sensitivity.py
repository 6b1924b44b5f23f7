"""Loss sensitivity (Arpit et al. 2017): the input-gradient norm of a sample's loss, averaged over
epoch checkpoints (eval mode). Arpit used the l1 norm (the default); the seed paper's code used l2."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


@register_proxy
class LossSensitivity(Proxy):
    name = "loss_sensitivity"
    description = "input-gradient norm of the loss (l1 by default, norm=2 for l2), mean over epoch checkpoints"
    citation = "Arpit et al., A Closer Look at Memorization in Deep Networks, ICML 2017"
    defaults = {"norm": 1}
    recorders = (RecorderRequest.of("input_grads"),)

    def validate(self) -> None:
        self.check_choice("norm", (1, 2))

    def score(self, ctx: ScoreContext) -> np.ndarray:
        key = "l1" if self.params["norm"] == 1 else "l2"
        return ctx.arrays(self.recorders[0])[key].mean(axis=0)
