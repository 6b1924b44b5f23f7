"""Review of the batch log (`harness.tracker.batch_log`): what `SampleTracker.update()` used to do at
once and must still do at once now that its batches are held and recorded later."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import SampleTracker
from harness.errors import HarnessError


def test_a_constructor_label_outside_the_logits_classes_fails_the_first_update_with_logits() -> None:
    """update(idx, logits=...) without labels= reads SampleTracker(labels=...). Before the fix a label
    there outside the logits' classes was accepted into the log and failed whatever recorded it
    next (end_epoch(), state_dict(), a later update() of another kind), and the log had been emptied
    first, so a second end_epoch() closed the epoch with nothing recorded. The constructor's labels
    are now checked against the logits' classes at once, for all samples."""
    tracker = SampleTracker(4, labels=[0, 1, 2, 3])  # sample 3's label is outside 3 classes
    with pytest.raises(HarnessError, match=r"gives sample 3 label 3, outside the logits' classes \[0, 3\)"):
        tracker.update(torch.arange(2), logits=torch.zeros(2, 3))
    good = SampleTracker(4, labels=[0, 1, 2, 2])
    good.update(torch.arange(2), logits=torch.zeros(2, 3))
    good.end_epoch()
    np.testing.assert_array_equal(good.epochs_presented(), [1, 1, 0, 0])


def test_a_failed_recording_keeps_the_held_batches_and_fails_again(monkeypatch) -> None:
    """Before the fix the log was emptied before it was recorded: a recording that failed dropped
    every held batch, and a second end_epoch() closed the epoch as if nothing had been presented."""
    tracker = SampleTracker(4, proxies=["csl"])
    tracker.update(torch.arange(4), losses=torch.ones(4))
    signals = tracker._signals
    real = signals.record_batch

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(signals, "record_batch", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        tracker.end_epoch()
    with pytest.raises(RuntimeError, match="device lost"):
        tracker.end_epoch()  # still held, still failing: never closed empty
    monkeypatch.setattr(signals, "record_batch", real)
    tracker.end_epoch()
    np.testing.assert_array_equal(tracker.epochs_presented(), [1, 1, 1, 1])


# -- behaviour that held up, pinned (these pass) ------------------------------------------------------

def test_a_reused_numpy_index_buffer_changes_nothing_recorded() -> None:
    """Host indices from numpy share memory with the user's array (`Inputs._from_numpy` ->
    `torch.as_tensor`); the log must copy them, not keep that view, until it is recorded."""
    tracker = SampleTracker(4, proxies=["csl"])
    buffer = np.zeros(2, dtype=np.int64)
    for part, losses in ((0, [1.0, 2.0]), (1, [3.0, 4.0])):
        buffer[:] = [2 * part, 2 * part + 1]
        tracker.update(buffer, losses=torch.tensor(losses))
    buffer[:] = 0  # the loop reuses its buffer before end_epoch records the held batches
    tracker.end_epoch()
    np.testing.assert_array_equal(tracker.scores()["csl"], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(tracker.epochs_presented(), [1, 1, 1, 1])


def test_a_state_saved_mid_epoch_under_inference_mode_resumes() -> None:
    """state_dict() records the held batches; under the caller's inference_mode the rows it makes
    must still take later writes outside it (Lightning saves checkpoints from its eval loop)."""
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 3, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    whole = SampleTracker(8)
    whole.update(torch.arange(4), logits=logits[:4], labels=labels[:4])
    with torch.inference_mode():
        state = whole.state_dict()
    whole.update(torch.arange(4, 8), logits=logits[4:], labels=labels[4:])
    whole.end_epoch()
    resumed = SampleTracker(8)
    resumed.load_state_dict(state)
    resumed.update(torch.arange(4, 8), logits=logits[4:], labels=labels[4:])
    resumed.end_epoch()
    a, b = whole.scores(), resumed.scores()
    for column in a.columns.drop("label"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy(), err_msg=column)
