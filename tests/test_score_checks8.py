"""How proxy scores become numbers, eighth review: each test pins a value an earlier version got wrong.

- confident_learning's 1 − self-confidence came from the float32 `probs_last` only: renormalized
  in float64 it tied every unflagged sample whose label margin passes ~37 nats at exactly 0 (and
  rounded it past ~27 nats), though each fold run records phi, exact at any margin. Below 1e-3 it
  now comes from phi; the flags and larger values are unchanged bit for bit.
- the tracker cast a proxy's return with `np.array(..., dtype=float64)`, unchecked, while the
  experiment checked it: a (n, 1) array failed inside pandas without naming the proxy, a complex
  one lost its imaginary part with a ComplexWarning, and a bf16 tensor failed in numpy in both.
  Both now use `proxies.base.checked_scores`, which takes any torch tensor as its float64 copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from harness import SampleTracker
from harness.evaluation import score
from harness.recorders import EVAL_LAST
from harness.recorders.eval_pass import logit_confidence
from harness.runspec import DataSpec, RunSpec
from proxies import ScoreContext, make_proxy
from proxies.base import Proxy, checked_scores
from proxies.confident_learning import confident_learning_scores
from tests.conftest import TINY_RECIPE, FakeRun

# 30 samples of 3 classes, each class's 10 scored with the label's margin over both other classes;
# samples 0, 10 and 20 are predicted as the next class by 3 nats: the label issues.
MARGINS = np.array([0.0, 38.0, 40.0, 45.0, 50.0, 2.0, 2.5, 3.0, 3.5, 4.0] * 3)
ISSUES = np.isin(np.arange(30), [0, 10, 20])
SATURATED = np.isin(np.arange(30) % 10, [1, 2, 3, 4])  # margins >= 38: 1 - p rounds to 0 in float64


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, float32 probabilities, float32 phi), as the eval pass records them from the logits."""
    labels = np.repeat(np.arange(3), 10)
    logits = np.zeros((30, 3), dtype=np.float32)
    logits[np.arange(30), labels] = MARGINS
    logits[ISSUES, (labels[ISSUES] + 1) % 3] = 3.0
    t, y = torch.from_numpy(logits), torch.from_numpy(labels)
    return labels, torch.softmax(t, -1).numpy(), logit_confidence(t, y).numpy()


def _exact_tail() -> np.ndarray:
    """1 − p(label) in float64 from the logits: 2 e^-m / (1 + 2 e^-m) for the unflagged samples."""
    other = 2.0 * np.exp(-MARGINS)
    return other / (1.0 + other)


def test_confident_samples_are_ordered_by_their_exact_self_confidence() -> None:
    from cleanlab.filter import find_label_issues  # here: the GPU session's device has no cleanlab

    labels, probs, phi = _case()
    old, old_flags = confident_learning_scores(labels, probs)
    new, flags = confident_learning_scores(labels, probs, phi)
    # the flags are cleanlab's on pred_probs, as before: phi never reaches them
    np.testing.assert_array_equal(flags, ISSUES)
    np.testing.assert_array_equal(flags, old_flags)
    np.testing.assert_array_equal(flags, find_label_issues(labels, probs / probs.sum(1, keepdims=True),
                                                           filter_by="confident_learning"))
    assert (old[SATURATED] == 0.0).all()  # before: 12 unflagged samples tied at exactly 0
    np.testing.assert_allclose(new[SATURATED], _exact_tail()[SATURATED], rtol=1e-5)
    assert len(np.unique(new[SATURATED])) == 4 and (np.diff(new[1:5]) < 0).all()  # larger margin, lower
    large = (old - flags) >= 1e-3
    np.testing.assert_array_equal(new[large], old[large])  # the recorded values stay, bit for bit
    assert large.sum() == 18  # the issues (1 − p ~ 0.95) and the margins of 2 to 4 nats


def _fold_runs(phi_in: tuple[bool, ...]) -> tuple[Proxy, ScoreContext]:
    """The confident_learning proxy and a context whose fold runs recorded `_case()`'s last eval
    pass (each for all samples, as a stored run does), with phi where `phi_in[k]`."""
    labels, probs, phi = _case()
    proxy = make_proxy("confident_learning")
    base = RunSpec(data=DataSpec(), model="mlp", recipe=TINY_RECIPE)
    runs = {}
    for spec, has_phi in zip(proxy.fold_specs(base), phi_in, strict=True):
        arrays = {"probs_last": probs, "loss": np.zeros((1, 30), np.float32)}
        runs[spec] = FakeRun({EVAL_LAST.key: {**arrays, **({"phi": phi[None]} if has_phi else {})}})
    return proxy, ScoreContext(base=base, labels=labels, num_classes=3, runs=runs)


def test_the_proxy_reads_each_folds_phi() -> None:
    proxy, ctx = _fold_runs((True, True, True))
    labels, probs, phi = _case()
    got = proxy.score(ctx)
    np.testing.assert_array_equal(got, confident_learning_scores(labels, probs, phi)[0])
    np.testing.assert_allclose(got[SATURATED], _exact_tail()[SATURATED], rtol=1e-5)  # before: all 0.0


def test_a_fold_stored_before_phi_keeps_every_sample_on_the_float32_values() -> None:
    """One fold without phi (a run stored before it was recorded): no sample reads phi, so one
    ranking never mixes exact values of two folds with rounded ones (tied at 0) of the third."""
    proxy, ctx = _fold_runs((True, False, True))
    labels, probs, _ = _case()
    np.testing.assert_array_equal(proxy.score(ctx), confident_learning_scores(labels, probs)[0])


def test_phi_of_the_wrong_shape_or_with_nan_is_refused() -> None:
    labels, probs, phi = _case()
    with pytest.raises(Exception, match=r"phi must be a complete \(30,\) array, got shape \(29,\)"):
        confident_learning_scores(labels, probs, phi[:29])
    phi[3] = np.nan
    with pytest.raises(Exception, match=r"phi must be a complete \(30,\) array, got shape \(30,\) with NaN"):
        confident_learning_scores(labels, probs, phi)


# --- one check of a proxy's return, in the experiment and in the tracker ---

N = 1437  # digits_noisy's samples; the tracker gets as many, so both messages are the same


def _returned(kind: str, n: int) -> Any:
    values = np.linspace(0.0, 1.0, n)
    return {
        "column": values[:, None],
        "complex": values + 1j,
        "tensor": torch.tensor(values),
        "bf16": torch.tensor(values, dtype=torch.bfloat16),
        "grad": torch.tensor(values, dtype=torch.float32, requires_grad=True),
        "list": list(values),
        "strings": np.array(["a"] * n),
    }[kind]


class _Returns(Proxy):
    name = "returns"
    description = "returns what `kind` says"
    citation = "-"
    defaults = {"kind": "list"}

    def score(self, ctx: ScoreContext) -> Any:
        return _returned(self.params["kind"], len(ctx.labels))


def _tracker() -> SampleTracker:
    tracker = SampleTracker(N)
    g = torch.Generator().manual_seed(0)
    tracker.update(torch.arange(N), logits=torch.randn(N, 3, generator=g), labels=torch.arange(N) % 3)
    tracker.end_epoch()
    return tracker


REFUSED = {
    "column": ("ValueError", f"it returned shape ({N}, 1); a proxy returns one score per sample, shape ({N},)"),
    "complex": ("TypeError", "it returned complex128 scores; a proxy returns real numbers"),
    "strings": ("TypeError", "it returned <U1 scores; a proxy returns real numbers"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_both_paths_refuse_the_same_returns_with_the_same_message(kind, base_spec, digits_noisy) -> None:
    assert digits_noisy.n == N
    proxy = _Returns(kind=kind)
    kind_name, message = REFUSED[kind]
    scores, problems = score([proxy], base_spec, digits_noisy, {base_spec: None})
    assert scores == {}
    assert problems == [f"proxy {proxy.label} failed for {base_spec.label()}: {kind_name}: {message}; "
                        "left out of the leaderboard"]
    with pytest.raises(Exception) as caught:
        _tracker().scores([proxy])
    assert type(caught.value).__name__ == kind_name  # before: pandas' unnamed error, or a complex cast
    assert str(caught.value) == f"proxy {proxy.label} failed: {message}"


@pytest.mark.parametrize("kind", ["tensor", "bf16", "grad", "list"])
def test_both_paths_take_tensors_and_lists_as_float64(kind, base_spec, digits_noisy) -> None:
    proxy = _Returns(kind=kind)
    raw = _returned(kind, N)
    expected = raw.detach().double().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    scores, problems = score([proxy], base_spec, digits_noisy, {base_spec: None})
    assert problems == []  # before: bf16 and grad tensors failed in numpy
    column = _tracker().scores([proxy])[proxy.label].to_numpy()
    for got in (scores[proxy.label], column):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, expected)
    if kind == "bf16":
        assert column[1] == 0.000698089599609375  # bf16's value of 1/1436, not float64's


def test_the_checked_scores_are_a_copy() -> None:
    """The tracker blanks spoiled samples in the column: never in the proxy's own array."""
    own = np.arange(4, dtype=np.float64)
    got = checked_scores(own, 4)
    got[0] = np.nan
    assert own[0] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cuda_bf16_tensor_that_requires_grad_comes_back_to_the_host() -> None:
    """np.asarray failed on a CUDA tensor with a TypeError that named no proxy."""
    values = torch.linspace(0, 1, 5, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    got = checked_scores(values * 2, 5)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, (values * 2).detach().double().cpu().numpy())
