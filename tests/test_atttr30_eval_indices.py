"""atttr30: an eval pass's sample indices on a GPU are range-checked on the device (no sync per batch), as
update()'s are. They went into the training batches' flag: a pass with an index outside [0, n) was recorded
with that index clamped to n - 1 (sample n - 1's final_loss could be another sample's, silently, when the
labels agreed), and the next end_epoch() was refused for update() indices -- by a refused pass too.

Without a GPU here, indices are taken as device ones are (`batch_indices` returning (None, tensor): the
deferred check) by a monkeypatch; the host path's immediate check is unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError
from harness.tracker import inputs as tracker_inputs

N, C = 12, 3


def _setup() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    g = torch.Generator().manual_seed(30)
    x, y = torch.randn(N, 4, generator=g), torch.arange(N) % C
    torch.manual_seed(30)
    return x, y, nn.Linear(4, C)


X, Y, MODEL = _setup()


@pytest.fixture
def device_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    def as_device(self, indices, where="update()"):  # noqa: ANN001, ANN202 - the patched method's signature
        return None, torch.as_tensor(indices).long()

    monkeypatch.setattr(tracker_inputs.Inputs, "batch_indices", as_device)


def _closed() -> SampleTracker:
    tracker = SampleTracker(N)
    with torch.no_grad():
        tracker.update(torch.arange(N), logits=MODEL(X), labels=Y)
    tracker.end_epoch()
    return tracker


def _ce() -> np.ndarray:
    with torch.no_grad():
        return nn.functional.cross_entropy(MODEL(X), Y, reduction="none").numpy().astype(np.float64)


def test_an_eval_index_outside_n_refuses_the_pass_and_changes_nothing(device_indices: None) -> None:
    tracker = _closed()
    tracker.eval_epoch(MODEL, (X, Y))
    before = copy.deepcopy(tracker.state_dict())
    idx = torch.arange(N)
    idx[5] = N + 3  # the labels agree with sample N - 1's, where the index is clamped to
    y = Y.clone()
    y[5] = Y[N - 1]
    with pytest.raises(HarnessError, match=r"eval_epoch\(\): sample indices outside \[0, 12\) \(the pass was not"):
        tracker.eval_epoch(MODEL, [(X, y, idx)])
    after = tracker.state_dict()
    assert not bool(after["signals"]["bad_index"])
    torch.testing.assert_close(after["signals"]["bank"], before["signals"]["bank"], equal_nan=True)
    np.testing.assert_array_equal(tracker.copy().scores(["final_loss"])["final_loss"].to_numpy(), _ce())
    with torch.no_grad():  # the next epoch is not refused for the pass's index
        tracker.update(torch.arange(N), logits=MODEL(X), labels=Y)
    tracker.end_epoch()
    assert tracker.epochs == 2


def test_one_based_eval_indices_are_named_as_indices(device_indices: None) -> None:
    """1..n for 0..n-1: every label is compared with the next sample's; the error names the indices."""
    tracker = _closed()
    with pytest.raises(HarnessError, match="sample indices outside"):
        tracker.eval_epoch(MODEL, [(X, Y, torch.arange(1, N + 1))])
    with torch.no_grad():
        tracker.update(torch.arange(N), logits=MODEL(X), labels=Y)
    tracker.end_epoch()
    tracker.eval_epoch(MODEL, [(X, Y, torch.arange(N))])
    np.testing.assert_array_equal(tracker.scores(["final_loss"])["final_loss"].to_numpy(), _ce())


def test_host_eval_indices_are_still_refused_at_once() -> None:
    tracker = _closed()
    with pytest.raises(HarnessError, match=r"sample index 12 is outside \[0, 12\)"):
        tracker.eval_epoch(MODEL, [(X, Y, torch.arange(1, N + 1))])
