"""Cumulative Sample Gradient: the sum over epoch checkpoints of the sample's input-gradient l2 norm.

It reads the same `input_grads` recorder as loss sensitivity and learning time, so on a shared run
it costs nothing beyond theirs. `every=k` sums every k-th checkpoint and the last (about 1/k of the
full sum, so compare scores only at one `every`).
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from harness.recorders.input_grads import input_grads_request
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


@register_proxy
class CSG(Proxy):
    name = "csg"
    description = "sum over epoch checkpoints of the input-gradient l2 norm of the loss (eval mode)"
    citation = "Ravikumar et al., ICLR 2026 (Cumulative Sample Gradient)"
    defaults = {"every": 1}

    def validate(self) -> None:
        self.check_int("every", 1)

    @property
    def recorders(self) -> tuple[RecorderRequest, ...]:  # type: ignore[override]
        return (input_grads_request(self.params["every"]),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nansum(float64_record(ctx.arrays(self.recorders[0])["l2"]), axis=0)  # over the scored checkpoints
