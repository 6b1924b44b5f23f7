"""Proxies audited against docs/methods.md section 1: each test pins a value the spec fixes and an
earlier version got wrong (the independent recomputations that agreed are listed in the audit
report, not repeated here).

- EL2N's early window: "the first 10 % of E" rounded with Python's round(), which sends halves to
  even, so 10 % of 25 epochs averaged 2 epochs (8 %) while 10 % of 15 averaged 2 and of 35 averaged 4.
- learning_time's `power` passed an `in` test, so 2.0 ran labelled as the default and 1.0 beside 1
  under a second name, while every other proxy refuses a float for an integer choice.
- curvature accepted any h > 0; below ~1e-5 the float32 finite difference is rounding noise (at
  h = 1e-9 most scores are exactly 0), a column of numbers that measure nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from proxies import make_proxy


def _el2n_ctx(score_ctx, epochs: int):
    """EL2N rows whose mean over the first k epochs is k (row e holds 2e + 1, e = 0..E-1)."""
    el2n = np.repeat((2.0 * np.arange(epochs) + 1.0)[:, None], 2, axis=1)
    return score_ctx({"train_prob": {"el2n": el2n, "p_label": np.zeros_like(el2n)}})


@pytest.mark.parametrize(
    "epochs, window, first",
    [
        (4, 0.1, 1),  # 0.4 epochs -> at least one
        (5, 0.1, 1),  # 0.5 -> 1 (halves up; round() gave 0, lifted to 1)
        (15, 0.1, 2),  # 1.5 -> 2
        (25, 0.1, 3),  # 2.5 -> 3 (round() gave 2: 8 % of the run)
        (35, 0.1, 4),  # 3.5000000000000004 -> 4
        (45, 0.1, 5),  # 4.5 -> 5 (round() gave 4)
        (5, 0.5, 3),  # 2.5 -> 3 (round() gave 2)
        (10, 0.3, 3),  # 3.0000000000000004 -> 3, float noise does not add an epoch
        (200, 0.1, 20),  # the paper preset
        (7, 1.0, 7),
    ],
)
def test_el2n_window_rounds_halves_up(score_ctx, epochs: int, window: float, first: int) -> None:
    # the mean of 1, 3, ..., 2k - 1 is k: the score says how many epochs were averaged
    got = make_proxy("el2n", window=window).score(_el2n_ctx(score_ctx, epochs))
    np.testing.assert_allclose(got, [first, first])


@pytest.mark.parametrize("power", [2.0, 1.0, np.float64(2.0)])
def test_learning_time_power_is_an_integer_choice(power) -> None:
    with pytest.raises(HarnessError, match=r"learning_time\.power must be one of 1, 2"):
        make_proxy("learning_time", power=power)
    assert make_proxy("learning_time", power=1).label == "learning_time(power=1)"
    assert make_proxy("learning_time", power=2).label == "learning_time"


@pytest.mark.parametrize("h", [1e-6, 1e-9, 1e-300])
def test_curvature_refuses_steps_below_float32_resolution(h: float) -> None:
    with pytest.raises(HarnessError, match=r"curvature\.h must be at least 1e-05 .*float32"):
        make_proxy("curvature", h=h)
    assert make_proxy("curvature", h=1e-5).request.key == "curvature[every=1,h=1e-05,n=10]"
