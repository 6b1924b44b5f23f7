"""Loss sensitivity (Arpit et al. 2017): the input-gradient norm of a sample's loss, averaged over
epoch checkpoints (eval mode). Arpit used the l1 norm (the default); the seed paper's code used l2.
`every=k` averages over every k-th checkpoint and the last (for large data on a CPU)."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from harness.recorders.input_grads import input_grads_request
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


@register_proxy
class LossSensitivity(Proxy):
    name = "loss_sensitivity"
    description = (
        "input-gradient norm of the loss, mean over epoch checkpoints: l1 as Arpit et al. (default), "
        "norm=2 for l2 as the seed paper's released code"
    )
    citation = "Arpit et al., A Closer Look at Memorization in Deep Networks, ICML 2017"
    defaults = {"norm": 1, "every": 1}

    def validate(self) -> None:
        self.check_choice("norm", (1, 2))
        self.check_int("every", 1)

    @property
    def recorders(self) -> tuple[RecorderRequest, ...]:  # type: ignore[override]
        return (input_grads_request(self.params["every"]),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        key = "l1" if self.params["norm"] == 1 else "l2"
        return np.nanmean(float64_record(ctx.arrays(self.recorders[0])[key]), axis=0)  # the scored checkpoints
