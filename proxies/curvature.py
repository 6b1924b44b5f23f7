"""Input-loss curvature (Garg et al. 2024): finite-difference curvature of the loss around each
input, averaged over the scored epoch checkpoints. Defaults n = 10 draws and h = 1e-3 (the seed
paper's Tables 2-3 setting); `every` scores every k-th epoch (and always the last)."""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.runspec import RunSpec
from proxies.base import Need, Proxy, ScoreContext, float64_record
from proxies.registry import register_proxy

#: Smallest step `h` accepted. The recorder works in float32: measured against a float64 reference on
#: a digits MLP, the median relative error of the scores is 3.5e-4 at h = 1e-3, 4 % at 1e-5, 29 % at
#: 1e-6, and at 1e-9 most scores are exactly 0 (x + h*v == x in float32).
MIN_STEP = 1e-5


@register_proxy
class Curvature(Proxy):
    name = "curvature"
    description = "mean over checkpoints of E_v ||grad(x+hv) - grad(x)||_2, v Rademacher (n draws, step h)"
    citation = "Garg et al., Memorization Through the Lens of Curvature of Loss Function Around Samples, ICML 2024"
    defaults = {"n": 10, "h": 1e-3, "every": 1}

    def validate(self) -> None:
        self.check_int("n", 1)
        self.check_int("every", 1)
        h = self.params["h"]
        if isinstance(h, int | float) and not isinstance(h, bool) and 0 < h < MIN_STEP:
            raise HarnessError(f"curvature.h must be at least {MIN_STEP:g} (got {self.params['h']!r}): a smaller "
                               "step drowns in float32 rounding (x + h*v rounds back to x), so the scores "
                               "would be rounding noise, not curvature")
        self.check_number("h", MIN_STEP, 1.0, low_open=False)  # a finite-difference step on standardised inputs

    @property
    def request(self) -> RecorderRequest:
        p = self.params
        return RecorderRequest.of("curvature", n=int(p["n"]), h=float(p["h"]), every=int(p["every"]))

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(base, frozenset({self.request}))]

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.nanmean(float64_record(ctx.arrays(self.request)["curvature"]), axis=0)
