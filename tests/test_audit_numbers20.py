"""Numerical audit (round 20): the proxies that reduce a float32 record over epochs do it in float64.

The recorders store float32 (E, N) arrays. numpy reduces a float32 array in float32, and along
axis 0 it adds one epoch after the other, so each addition rounds to float32: a late-epoch loss
of 4e-8 added to a CSL of 1.0 is below half an ulp and vanishes. Over the paper's 200 epochs the
tail of every fitted sample's loss (or margin, or gradient norm) was dropped, and two samples whose
exact sums differ could swap ranks. The expected values here are exact (math.fsum of the float32
values as float64), written from methods.md's definitions, not from the proxies' code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.recorders import RecorderRequest
from proxies import make_proxy

EPOCHS = 100


def _records() -> np.ndarray:
    """(E, 2) float32: sample 0 is 1.0 then E - 1 epochs of 4e-8 (exact sum 1.00000396), sample 1
    is 1.000001 then zeros (1.00000095): sample 0's sum is the larger, yet a float32 running sum
    stays at 1.0 for it."""
    x = np.zeros((EPOCHS, 2), dtype=np.float32)
    x[0] = [1.0, 1.000001]
    x[1:, 0] = 4e-8
    return x


def _exact(x: np.ndarray, how: str) -> np.ndarray:
    out = []
    for column in np.asarray(x, dtype=np.float64).T:
        total = math.fsum(column)
        mean = total / len(column)
        out.append({"sum": total, "mean": mean,
                    "std": math.sqrt(math.fsum((v - mean) ** 2 for v in column) / len(column))}[how])
    return np.array(out)


CURVATURE = RecorderRequest.of("curvature", n=10, h=1e-3, every=1).key
#: proxy (with parameters), recorder key, array, reduction over epochs (methods.md §1), sign
CASES = [
    ("csl", {}, "train_loss", "loss", "sum", 1),
    ("csl_eval", {}, "eval_pass[epochs=all]", "loss", "sum", 1),
    ("csg", {}, "input_grads", "l2", "sum", 1),
    ("loss_sensitivity", {}, "input_grads", "l1", "mean", 1),
    ("loss_sensitivity", {"norm": 2}, "input_grads", "l2", "mean", 1),
    ("curvature", {}, CURVATURE, "curvature", "mean", 1),
    ("aum", {}, "train_margin", "margin", "mean", -1),
    ("el2n", {"window": 1.0}, "train_prob", "el2n", "mean", 1),
    ("variability", {}, "train_prob", "p_label", "std", 1),
]


@pytest.mark.parametrize(("name", "params", "key", "array", "how", "sign"), CASES,
                         ids=[f"{c[0]}{c[1] or ''}" for c in CASES])
def test_reductions_over_epochs_are_exact_float64(score_ctx, name, params, key, array, how, sign) -> None:
    x = _records()
    ctx = score_ctx({key: {array: x}})
    got = np.asarray(make_proxy(name, **params).score(ctx), dtype=np.float64)
    np.testing.assert_allclose(got, sign * _exact(x, how), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["csl", "aum"])
def test_the_late_tail_orders_two_samples_as_their_exact_sums_do(score_ctx, name) -> None:
    """CSL: sample 0's exact sum is the larger (1.00000396 > 1.00000095); the float32 running sum
    said 1.0 < 1.00000095. AUM is minus the mean margin: the same two columns as margins."""
    key, array = {"csl": ("train_loss", "loss"), "aum": ("train_margin", "margin")}[name]
    s = np.asarray(make_proxy(name).score(score_ctx({key: {array: _records()}})))
    assert (s[0] > s[1]) if name == "csl" else (s[0] < s[1])


def test_unpresented_epochs_still_add_nothing(score_ctx) -> None:
    """The float64 sums keep NaN = not presented: a skipped epoch adds 0 to csl and is left out of
    the means (here aum), as before."""
    loss = np.array([[1.5, np.nan], [np.nan, 0.25], [0.5, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(make_proxy("csl").score(score_ctx({"train_loss": {"loss": loss}})), [2.0, 0.5])
    margin = np.array([[1.0, np.nan], [np.nan, 3.0], [2.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(make_proxy("aum").score(score_ctx({"train_margin": {"margin": margin}})),
                                  [-1.5, -2.0])


@pytest.mark.parametrize("variant", ["given", "max"])
def test_in_confidence_is_one_minus_p_in_float64(score_ctx, variant) -> None:
    """1 - p of a float32 p below 0.5 rounds in float32: two adjacent probabilities, 0.30000004 and
    0.30000007, both gave 0.69999993, a tie the recorded values do not have. methods.md: 1 - p."""
    p = np.array([[0.30000004, 0.30000007]], dtype=np.float32)
    arrays = {"p_label": p, "p_max": p, "correct": np.zeros((1, 2), dtype=np.float32), "loss": -np.log(p)}
    got = np.asarray(make_proxy("in_confidence", variant=variant).score(score_ctx({"eval_pass[epochs=last]": arrays})))
    np.testing.assert_array_equal(got, 1.0 - p[0].astype(np.float64))
    assert got[0] > got[1]
