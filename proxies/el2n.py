"""EL2N (Paul et al. 2021): error-vector norm, averaged over an early window of training."""

from __future__ import annotations

import math

import numpy as np

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy


def window_epochs(window: float, epochs: int) -> int:
    """How many leading epochs a `window` fraction of `epochs` covers: the nearest whole number,
    halves rounded up, at least 1 and at most `epochs`.

    Halves go up on purpose: Python's round() sends them to the even neighbour, so 1.5 went up and
    2.5 down (10 % of 15 epochs gave 2, of 25 also 2, i.e. 8 %, of 45 gave 4). The product is
    rounded to 9 decimals first so that float noise (0.3 * 10 = 3.0000000000000004) cannot count.
    """
    return min(epochs, max(1, math.floor(round(window * epochs, 9) + 0.5)))


@register_proxy
class EL2N(Proxy):
    name = "el2n"
    description = ("||softmax - onehot(label)||_2 in the training pass, mean over the first 10% of epochs "
                   "(rounded to the nearest epoch, halves up, at least one)")
    citation = "Paul et al., Deep Learning on a Data Diet, NeurIPS 2021"
    defaults = {"window": 0.1}
    recorders = (RecorderRequest.of("train_prob"),)

    def validate(self) -> None:
        self.check_number("window", 0.0, 1.0)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        el2n = float64_record(ctx.arrays(self.recorders[0])["el2n"])
        return np.nanmean(el2n[: window_epochs(float(self.params["window"]), el2n.shape[0])], axis=0)
