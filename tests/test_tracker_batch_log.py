"""`SampleTracker` holds a user's batches and records them together (`harness.tracker.batch_log`):
what it records must equal recording every batch as it comes, whatever the log's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import SampleTracker
from harness.tracker import batch_log

N, C = 30, 4


def _batches(seed: int) -> list[dict[str, torch.Tensor]]:
    """Two epochs of batches of mixed kinds: losses only, logits and labels, losses and logits;
    repeats within and across batches, a NaN loss, an inf logit, uneven sizes, int32 indices."""
    gen = torch.Generator().manual_seed(seed)
    label_of = torch.randint(0, C, (N,), generator=gen)  # one label per sample (another would be refused)
    epochs = []
    for epoch in range(2):
        order = torch.randperm(N, generator=gen)
        order = torch.cat([order, order[:3]])  # three samples presented again at the end of the epoch
        batches = []
        for i, idx in enumerate(order.split([5, 8, 1, 9, 4, 6])):
            idx = torch.cat([idx, idx[:1]]) if i == 1 else idx  # a repeat within a batch
            b = len(idx)
            logits = torch.randn(b, C, generator=gen)
            labels = label_of[idx]
            losses = torch.rand(b, generator=gen) * 3
            if epoch == 0 and i == 2:
                losses[0] = float("nan")
            if epoch == 1 and i == 4:  # a batch of logits only: the loss comes from them
                logits[1, 2] = float("inf")
            kind = i % 3
            batches.append({"indices": idx.to(torch.int32) if i == 4 else idx,
                            **({"losses": losses} if kind != 1 else {}),
                            **({"logits": logits, "labels": labels} if kind != 0 else {})})
        epochs.append(batches)
    return epochs


def _record(monkeypatch: pytest.MonkeyPatch, rows: int, logit_values: int) -> SampleTracker:
    monkeypatch.setattr(batch_log, "MAX_ROWS", rows)
    monkeypatch.setattr(batch_log, "MAX_LOGIT_VALUES", logit_values)
    tracker = SampleTracker(N)
    with pytest.warns(RuntimeWarning):  # the repeats and the non-finite values are reported
        for epoch in _batches(0):
            for batch in epoch:
                tracker.update(**batch)
            tracker.end_epoch()
    return tracker.finish()


def _records(t: SampleTracker) -> dict[str, np.ndarray]:
    arrays = {f"{key}/{name}": values for key in sorted(t._host.recorders)
              for name, values in t._host.arrays(key).items()}
    return {**arrays, "labels": t._labels_host, "pred": t._pred_host, "presented": t._presented_host,
            **{f"non_finite/{k}": v for k, v in t._non_finite_host.items()}}


@pytest.mark.parametrize(("rows", "logit_values"), [(1 << 16, 1 << 20), (7, 1 << 20), (64, 3 * C)])
def test_held_batches_record_what_batch_by_batch_recording_does(monkeypatch, rows: int, logit_values: int) -> None:
    one_by_one = _records(_record(monkeypatch, 1, 1))  # no batch fits: each is recorded as it comes
    held = _records(_record(monkeypatch, rows, logit_values))
    assert held.keys() == one_by_one.keys() and "train_loss/loss" in held and "train_margin/margin" in held
    for key in held:
        np.testing.assert_array_equal(held[key], one_by_one[key], err_msg=key)
    # the NaN loss and the inf logit were kept as such, not as "not presented"
    assert one_by_one["non_finite/train_loss"].sum() == 2


def test_a_tensor_changed_after_update_changes_nothing_recorded() -> None:
    tracker = SampleTracker(4, proxies=["csl"])
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    tracker.update(torch.arange(4), losses=losses)
    losses.mul_(100)  # a loop that reuses its buffer: the held batch is a copy
    tracker.end_epoch()
    np.testing.assert_array_equal(tracker.scores()["csl"], [1.0, 2.0, 3.0, 4.0])


def test_a_state_saved_mid_epoch_holds_the_batches_not_yet_recorded() -> None:
    idx, losses = torch.arange(6), torch.arange(6, dtype=torch.float32)
    whole = SampleTracker(6, proxies=["csl"])
    whole.update(idx[:3], losses=losses[:3])
    whole.update(idx[3:], losses=losses[3:])
    whole.end_epoch()
    first = SampleTracker(6, proxies=["csl"])
    first.update(idx[:3], losses=losses[:3])
    state = first.state_dict()
    resumed = SampleTracker(6, proxies=["csl"])
    resumed.load_state_dict(state)
    resumed.update(idx[3:], losses=losses[3:])
    resumed.end_epoch()
    np.testing.assert_array_equal(resumed.scores()["csl"], whole.scores()["csl"])
    np.testing.assert_array_equal(resumed.scores()["csl"], np.arange(6))


def test_a_bad_host_label_fails_its_own_update_not_the_epoch_end() -> None:
    tracker = SampleTracker(4)
    tracker.update(torch.arange(2), logits=torch.zeros(2, 3), labels=torch.tensor([0, 1]))
    with pytest.raises(Exception, match=r"label 3 is outside \[0, 3\)"):
        tracker.update(torch.arange(2, 4), logits=torch.zeros(2, 3), labels=torch.tensor([2, 3]))
    tracker.end_epoch()  # the good batch is recorded; the bad one was refused before it was held
    np.testing.assert_array_equal(tracker.epochs_presented(), [1, 1, 0, 0])
