"""Learning time from the seed paper (Eq. 7, threshold from App. B.4 Eq. 17), in both forms.

With g_t = ‖∇ₓℓ(w_t, z)‖^power at checkpoints t = 1..E (power 2 in the paper, 1 for ‖g‖, what the
released gradient files appear to hold), the running mean m_T = (1/T) Σ_{t≤T} g_t; the threshold
τ is the mean of m_T over all T and all samples. Learned later = higher score.
- ``rule=first`` (the paper's text, default): the first T with m_T ≤ τ, divided by E (never -> 1).
- ``rule=count`` (the authors' released notebook): the fraction of checkpoints with m_T > τ.
  m_T need not fall monotonically, and then ``first`` stops at an early dip (AUROC 0.50 on
  CIFAR-10 mislabeled detection, per issue 9), while counting is robust to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from proxies.base import Proxy, ScoreContext
from proxies.registry import register_proxy

RULES = ("first", "count")
POWERS = (1, 2)


def learning_time(sq: np.ndarray, rule: str = "first", power: int = 2) -> np.ndarray:
    """sq: (E, N) squared input-gradient norms per checkpoint -> (N,) learning times in [0, 1]."""
    if rule not in RULES or power not in POWERS:
        raise HarnessError(f"learning_time needs rule in {RULES} and power in {POWERS}, got {rule!r}, {power!r}")
    g = np.asarray(sq, dtype=np.float64)
    if power == 1:
        g = np.sqrt(g)
    epochs = g.shape[0]
    running = np.cumsum(g, axis=0) / np.arange(1, epochs + 1)[:, None]
    tau = running.mean()
    if rule == "count":
        return (running > tau).mean(axis=0)
    below = running <= tau
    first = np.where(below.any(axis=0), below.argmax(axis=0) + 1, epochs)
    return first / epochs


@register_proxy
class LearningTime(Proxy):
    name = "learning_time"
    description = ("learning time from input-gradient norms: first checkpoint whose running mean is <= the "
                   "global mean, / E (rule=first, paper) or fraction of checkpoints above it (rule=count)")
    citation = "Ravikumar et al., Towards Memorization Estimation: Fast, Formal and Free, ICML 2025 (Eq. 7, 17)"
    defaults: ClassVar[dict[str, Any]] = {"rule": "first", "power": 2}
    recorders = (RecorderRequest.of("input_grads"),)
    #: Variants that `--proxies all` runs beside the default (the released notebook's rule).
    variants_in_all: ClassVar[tuple[dict[str, Any], ...]] = ({"rule": "count"},)

    def validate(self) -> None:
        """Matched by type as well as value, like every proxy's choices: `power=2.0` would pass an
        `in` test but label itself as the default (2.0 == 2) and `power=1.0` as a second variant
        beside `power=1`, the same scores under two names."""
        self.check_choice("rule", RULES)
        self.check_choice("power", POWERS)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return learning_time(ctx.arrays(self.recorders[0])["sq"], self.params["rule"], self.params["power"])
