"""Dataset-cartography variability (Swayamdipta et al. 2020).

The population standard deviation (ddof=0), as the authors' released code computes it
(`np.std(conf)` in cartography's `compute_train_dy_metrics`): over E epochs a sample's spread is
the root mean squared deviation from its mean p_y, not the sample estimate with E - 1.
"""

from __future__ import annotations

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


@register_proxy
class Variability(Proxy):
    name = "variability"
    description = "population std (ddof=0) over epochs of the training-pass probability of the given label"
    citation = "Swayamdipta et al., Dataset Cartography, EMNLP 2020"
    recorders = (RecorderRequest.of("train_prob"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nanstd(float64_record(ctx.arrays(self.recorders[0])["p_label"]), axis=0)
