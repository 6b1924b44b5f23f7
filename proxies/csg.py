"""Cumulative Sample Gradient: the sum over epoch checkpoints of the sample's input-gradient l2 norm.

It reads the same `input_grads` recorder as loss sensitivity and learning time, so on a shared run
it costs nothing beyond theirs.
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


@register_proxy
class CSG(Proxy):
    name = "csg"
    description = "sum over epoch checkpoints of the input-gradient l2 norm of the loss (eval mode)"
    citation = "Ravikumar et al., ICLR 2026 (Cumulative Sample Gradient)"
    recorders = (RecorderRequest.of("input_grads"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return ctx.arrays(self.recorders[0])["l2"].sum(axis=0)
