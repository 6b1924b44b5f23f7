"""The train_class_prob recorder: each sample's training-pass softmax summed over the epochs it was
presented in, the suspects task's suggested label's source. Checked against softmaxes computed by
hand, batch by batch and joined, with a user's loop passing losses only, and resumed."""

from __future__ import annotations

import numpy as np
import torch

from harness.recorders import RecorderBank, RunContext, build_recorder
from harness.recorders.class_prob import SUGGEST, mean_probs

CPU = torch.device("cpu")


def _ctx(n: int = 5, classes: int = 3) -> RunContext:
    return RunContext(None, None, None, 4, CPU, samples=n, classes=classes)


def _batches() -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(epoch, indices, logits): samples 0-3 in both epochs, sample 4 never (it keeps NaN)."""
    gen = torch.Generator().manual_seed(0)
    return [(0, torch.tensor([0, 2]), torch.randn(2, 3, generator=gen)),
            (0, torch.tensor([1, 3]), torch.randn(2, 3, generator=gen)),
            (1, torch.tensor([3, 1, 0, 2]), torch.randn(4, 3, generator=gen))]


def _expected() -> np.ndarray:
    total, seen = np.zeros((5, 3)), np.zeros(5)
    for _, idx, logits in _batches():
        total[idx.numpy()] += torch.softmax(logits, 1).numpy()
        seen[idx.numpy()] += 1
    return np.where(seen[:, None] > 0, total / np.maximum(seen, 1)[:, None], np.nan)


def _feed(bank: RecorderBank) -> None:
    for epoch, idx, logits in _batches():
        labels = torch.zeros(len(idx), dtype=torch.long)
        bank.on_batch(epoch, idx, logits, torch.zeros(len(idx)), labels)
        if epoch == 0 and idx[0] == 1:
            bank.on_epoch_end(0, 1, None)
    bank.on_epoch_end(1, 1, None)


def test_the_mean_softmax_over_the_pass_is_the_hand_computed_one_held_or_not() -> None:
    for hold in (False, True):
        bank = RecorderBank(_ctx(), [SUGGEST], timed=False, hold_batches=hold)
        _feed(bank)
        arrays = bank.arrays()[SUGGEST.key]
        assert arrays["seen"].tolist() == [2, 2, 2, 2, 0]
        probs = mean_probs(arrays)
        np.testing.assert_allclose(probs[:4], _expected()[:4], rtol=1e-6)
        assert np.isnan(probs[4]).all()  # never presented: no mean, not class 0's


def test_a_batch_without_logits_adds_nothing() -> None:
    rec = build_recorder(SUGGEST, _ctx())
    rec.on_batch(0, torch.tensor([0, 1]), None, torch.ones(2), None)
    arrays = rec.arrays()
    assert not arrays["prob_sum"].any() and not arrays["seen"].any()


def test_a_resumed_recorder_goes_on_from_its_loaded_sums() -> None:
    """`load_arrays` copies into the buffers the recorder adds to, so a resumed run keeps summing."""
    (first, *rest) = _batches()
    rec = build_recorder(SUGGEST, _ctx())
    rec.on_batch(first[0], first[1], first[2], torch.zeros(2), None)
    resumed = build_recorder(SUGGEST, _ctx())
    resumed.load_arrays(rec.arrays())
    for epoch, idx, logits in rest:
        resumed.on_batch(epoch, idx, logits, torch.zeros(len(idx)), None)
    np.testing.assert_allclose(mean_probs(resumed.arrays())[:4], _expected()[:4], rtol=1e-6)
