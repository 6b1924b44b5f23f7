"""Forgetting events (Toneva et al. 2019): how often a learned sample is lost again."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy


def forgetting_counts(correct: np.ndarray) -> np.ndarray:
    """correct: (E, N) training-pass correctness, NaN where the sample was not presented that epoch.

    An event compares a presentation with the sample's previous *presentation*, so an epoch that
    skipped the sample (drop_last, a custom sampler, a DDP shard in the tracker) is no event.
    Never-correct samples get E, above any real count; never-presented ones NaN (no evidence).
    """
    c = np.asarray(correct, dtype=np.float64)
    previous = pd.DataFrame(c).ffill().shift(1).to_numpy()  # the last presented value before each epoch
    events = ((previous > 0.5) & (c <= 0.5)).sum(axis=0).astype(np.float64)  # NaN compares False
    events[~(c > 0.5).any(axis=0)] = c.shape[0]
    events[np.isnan(c).all(axis=0)] = np.nan
    return events


@register_proxy
class Forgetting(Proxy):
    name = "forgetting"
    description = "number of correct->incorrect transitions across training-pass presentations (never correct -> E)"
    citation = "Toneva et al., An Empirical Study of Example Forgetting, ICLR 2019"
    recorders = (RecorderRequest.of("train_correct"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return forgetting_counts(ctx.arrays(self.recorders[0])["correct"])
