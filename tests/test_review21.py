"""Session review 21: each test pins a behaviour an earlier version got wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import SampleTracker
from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from proxies import ScoreContext
from proxies.base import Proxy

N = 6
TRAIN_LOSS = RecorderRequest.of("train_loss")


class _Broken(Proxy):
    name, description, citation = "broken_r21", "divides by zero", "you, 2026"
    recorders = (TRAIN_LOSS,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.full(N, 1 // (len(ctx.labels) - N))


class _Clipping(Proxy):
    name, description, citation = "clipping_r21", "clips its records in place", "you, 2026"
    recorders = (TRAIN_LOSS,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        loss = ctx.arrays(TRAIN_LOSS)["loss"]
        loss[loss > 0.5] = 0.5
        return loss.sum(0)


def _tracker() -> SampleTracker:
    tracker = SampleTracker(N)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        tracker.update(torch.arange(N), logits=torch.randn(N, 3, generator=g), labels=torch.arange(N) % 3)
        tracker.end_epoch()
    return tracker


def test_a_proxy_failing_inside_scores_is_named() -> None:
    """Before: a bare ZeroDivisionError from the proxy's own code, naming no proxy, though scores() ran several."""
    with pytest.raises(HarnessError, match=r"proxy broken_r21 failed: ZeroDivisionError: integer division") as e:
        _tracker().scores(["csl", _Broken()])
    assert isinstance(e.value.__cause__, ZeroDivisionError)


def test_a_proxy_writing_into_the_records_is_told_to_change_a_copy() -> None:
    """Before: numpy's 'assignment destination is read-only', with no proxy and no fix."""
    tracker = _tracker()
    with pytest.raises(HarnessError, match=r"proxy clipping_r21 failed: ValueError: .*read-only: change a copy"):
        tracker.scores([_Clipping()])
    plain = tracker.scores(["csl"])["csl"].to_numpy()  # the records are as recorded: nothing was clipped
    assert (plain > 0.5 * 2).any()


def test_a_label_file_with_fractional_labels_is_not_told_to_truncate_them(tmp_path) -> None:
    """Before: 'convert with labels.astype(int)', which turns 2.5 into class 2 without a word."""
    from harness.corruption import read_label_file

    labels = np.array([0, 1, 2, 2.5, 1, 0.25])
    np.save(tmp_path / "noisy.npy", labels)
    with pytest.raises(HarnessError) as e:
        read_label_file(str(tmp_path / "noisy.npy"), 6, 3)
    message = str(e.value)
    assert "2 non-integer values (first: sample 3, 2.5)" in message, message
    assert "astype(int) would truncate them" in message and "convert with" not in message
