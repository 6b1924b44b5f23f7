"""Input-loss curvature (Garg et al. 2024): finite-difference curvature of the loss around each
input, averaged over the scored epoch checkpoints. Defaults n = 10 draws and h = 1e-3 (the seed
paper's Tables 2-3 setting); `every` scores every k-th epoch (and always the last)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.runspec import RunSpec
from proxies.base import Need, Proxy, ScoreContext
from proxies.registry import register_proxy


@register_proxy
class Curvature(Proxy):
    name = "curvature"
    description = "mean over checkpoints of E_v ||grad(x+hv) - grad(x)||_2, v Rademacher (n draws, step h)"
    citation = "Garg et al., Memorization Through the Lens of Curvature of Loss Function Around Samples, ICML 2024"
    defaults = {"n": 10, "h": 1e-3, "every": 1}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        if isinstance(p["n"], bool) or not isinstance(p["n"], int) or p["n"] < 1:
            raise HarnessError(f"curvature.n must be an integer >= 1 (got {p['n']!r})")
        if isinstance(p["every"], bool) or not isinstance(p["every"], int) or p["every"] < 1:
            raise HarnessError(f"curvature.every must be an integer >= 1 (got {p['every']!r})")
        if isinstance(p["h"], bool) or not isinstance(p["h"], (int, float)) or not p["h"] > 0:
            raise HarnessError(f"curvature.h must be a number > 0 (got {p['h']!r})")

    @property
    def request(self) -> RecorderRequest:
        p = self.params
        return RecorderRequest.of("curvature", n=int(p["n"]), h=float(p["h"]), every=int(p["every"]))

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(base, frozenset({self.request}))]

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nanmean(ctx.arrays(self.request)["curvature"], axis=0)
