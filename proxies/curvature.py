"""Input-loss curvature (Garg et al. 2024): finite-difference curvature of the loss around each
input, averaged over the scored epoch checkpoints. Defaults n = 10 draws and h = 1e-3 (the seed
paper's Tables 2-3 setting); `every` scores every k-th epoch (and always the last)."""

from __future__ import annotations

import numpy as np

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

    def validate(self) -> None:
        self.check_int("n", 1)
        self.check_int("every", 1)
        self.check_number("h", 0.0, 1.0)  # a finite-difference step on standardised inputs

    @property
    def request(self) -> RecorderRequest:
        p = self.params
        return RecorderRequest.of("curvature", n=int(p["n"]), h=float(p["h"]), every=int(p["every"]))

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(base, frozenset({self.request}))]

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nanmean(ctx.arrays(self.request)["curvature"], axis=0)
