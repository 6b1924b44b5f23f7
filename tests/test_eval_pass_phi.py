"""φ = logit_y − logsumexp of the other logits: the eval pass records it, exactly, at any margin,
and old stored runs can derive it from their stored probabilities."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

from baselines.privacy import PHI_CAP, phi_from_probs
from harness.recorders import RecorderRequest, build_recorder
from harness.recorders.base import RunContext
from harness.recorders.eval_pass import eval_signals, logit_confidence


def _phi64(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y − log(1 − p_y) in float64, written out with scipy."""
    logp = logits - logsumexp(logits, axis=-1, keepdims=True)
    lp_y = np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    return lp_y - np.log1p(-np.exp(lp_y))


def test_phi_is_the_logit_of_p_label() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (50, 7))
    labels = rng.integers(0, 7, 50)
    got = logit_confidence(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)).numpy()
    np.testing.assert_allclose(got, _phi64(logits, labels), rtol=1e-5, atol=1e-5)


def test_phi_stays_exact_at_large_margins() -> None:
    """p_y rounds to 1 in float32 at a margin of ~17; φ from the logits does not saturate."""
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, -200.0], [-50.0, 30.0, 30.0]])
    labels = torch.tensor([0, 2, 0])
    got = logit_confidence(logits, labels).numpy()
    np.testing.assert_allclose(got, [100 - np.log(2), -200 - np.log(2), -80 - np.log(2)], rtol=1e-6)
    assert np.isfinite(got).all()


def test_phi_in_batched_signals() -> None:
    """Leading dimensions (K models, B samples) give the same values as one model at a time."""
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5, 4) * 4, torch.randint(0, 4, (5,))
    batched = eval_signals(logits, labels.expand(3, -1))["phi"]
    assert batched.shape == (3, 5) and batched.dtype == torch.float32
    for k in range(3):
        torch.testing.assert_close(batched[k], eval_signals(logits[k], labels)["phi"])


def test_eval_pass_records_phi_and_old_runs_derive_it(digits_noisy) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    ctx = RunContext(digits_noisy, 2, torch.arange(digits_noisy.n), 100, torch.device("cpu"))
    rec = build_recorder(RecorderRequest.of("eval_pass", epochs="last"), ctx)
    rec.on_epoch_end(1, 1, model)
    with torch.no_grad():
        logits = model(digits_noisy.inputs(torch.arange(digits_noisy.n))).double().numpy()
    y = digits_noisy.y.numpy()
    got = rec.arrays()
    assert got["phi"].shape == (1, digits_noisy.n)
    np.testing.assert_allclose(got["phi"][0], _phi64(logits, y), rtol=1e-5, atol=1e-5)
    # a run stored before phi existed: the same values from its float32 probabilities
    np.testing.assert_allclose(phi_from_probs(got["probs_last"], y), got["phi"][0], rtol=1e-4, atol=1e-4)


def test_phi_from_probs_caps_underflow() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]], dtype=np.float32)
    np.testing.assert_allclose(phi_from_probs(probs, np.array([0, 1])), [PHI_CAP, np.log(1 / 3)], rtol=1e-6)
