"""CSL as the authors' released code computes it: an extra eval pass per epoch supplies the loss."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


@register_proxy
class CSLEval(Proxy):
    name = "csl_eval"
    description = "CSL from an eval pass at every epoch checkpoint (the released code's variant)"
    citation = "Ravikumar et al., ICML 2025 (released code)"
    recorders = (RecorderRequest.of("eval_pass", epochs="all"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nansum(float64_record(ctx.arrays(self.recorders[0])["loss"]), axis=0)
