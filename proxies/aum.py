"""Area Under the Margin (Pleiss et al. 2020), negated so that higher = more suspicious."""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


@register_proxy
class AUM(Proxy):
    name = "aum"
    description = "-(mean over training-pass presentations of given-label logit minus largest other logit)"
    citation = "Pleiss et al., Identifying Mislabeled Data using the Area Under the Margin Ranking, NeurIPS 2020"
    recorders = (RecorderRequest.of("train_margin"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return -np.nanmean(float64_record(ctx.arrays(self.recorders[0])["margin"]), axis=0)
