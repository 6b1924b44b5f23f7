"""Session 30's leftover in b7ca517's hint: "every sample this epoch presented came again: call end_epoch() after
each epoch" fired for an oversampling sampler (WeightedRandomSampler with replacement drawing 5 x len(dataset):
every sample comes again), telling a loop that calls end_epoch() after each epoch to do so. The hint now needs
whole passes: no sample came again before every one had come once (a missed end_epoch(), batch positions)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset, WeightedRandomSampler

from harness import SampleTracker
from harness.tracker.signals import Presentations

N = 12
HINT = "in whole passes over them"


def _said(batches: list[torch.Tensor], resume: bool = False) -> str:
    """The warnings of one epoch whose batches present `batches` (losses only), closed by end_epoch()."""
    tracker = SampleTracker(N, proxies=["csl"])
    for i, idx in enumerate(batches):
        tracker.update(idx, losses=torch.ones(len(idx)))
        if resume and i == len(batches) // 2:  # a step checkpoint mid-epoch, resumed
            state = tracker.state_dict()
            tracker = SampleTracker(N, proxies=["csl"])
            tracker.load_state_dict(state)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        tracker.end_epoch()
    return " ".join(str(w.message) for w in said)


def _loader_batches(sampler) -> list[torch.Tensor]:
    loader = DataLoader(TensorDataset(torch.arange(N)), batch_size=4, sampler=sampler)
    return [idx for (idx,) in loader]


def test_an_oversampling_sampler_with_replacement_is_not_told_to_call_end_epoch() -> None:
    g = torch.Generator().manual_seed(3)
    batches = _loader_batches(WeightedRandomSampler(torch.ones(N), num_samples=5 * N, replacement=True, generator=g))
    counts = torch.bincount(torch.cat(batches), minlength=N)
    assert int(counts.min()) >= 2  # every sample came again: the old rule (count >= presented) gave the hint
    text = _said(batches)
    assert f"{N} sample(s) were presented more than once in epoch 1" in text
    assert HINT not in text and "end_epoch()" not in text


@pytest.mark.parametrize("resume", [False, True])
def test_a_loop_missing_end_epoch_is_still_told(resume: bool) -> None:
    """Three shuffled epochs closed by one end_epoch(), resumed from a mid-epoch state or not."""
    g = torch.Generator().manual_seed(4)
    batches = [b for _ in range(3) for b in _loader_batches(RandomSampler(range(N), generator=g))]
    text = _said(batches, resume)
    assert HINT in text and "call end_epoch() after each epoch" in text


def test_batch_positions_for_indices_are_still_told() -> None:
    text = _said([torch.arange(4), torch.arange(4), torch.arange(3)])
    assert "4 sample(s) were presented more than once" in text
    assert HINT in text and "not its position in the batch" in text


def test_a_repeat_before_the_pass_ends_is_not_a_whole_pass() -> None:
    """Every sample came again, but sample 0 before sample 11 had come: a sampler, not a missed end_epoch()."""
    text = _said([torch.tensor([0, 1, 2, 0]), torch.arange(3, N), torch.arange(1, N)])
    assert f"{N} sample(s) were presented more than once" in text and HINT not in text


@pytest.mark.parametrize(("order", "whole"), [
    ([list(range(N)), list(range(N))], True),  # two passes: a missed end_epoch()
    ([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2]], True),  # batch positions
    ([list(range(N)), [0], list(range(1, N))], True),
    ([[0, 1, 0], list(range(1, N)), list(range(N))], False),  # sample 0 again before the others came
    ([[5, 5], list(range(N)), list(range(N))], False),
])
def test_indices_on_the_device_count_whole_passes_alike(order: list[list[int]], whole: bool) -> None:
    """The device path (indices given as a GPU tensor: `first_seen`), driven on the CPU through `slots`."""
    device = Presentations(N, torch.device("cpu"))
    host = Presentations(N, torch.device("cpu"))
    for batch in order:
        idx = torch.tensor(batch)
        device.slots(idx)
        host.slots(idx, idx.numpy())
    assert device.sequence == sum(map(len, order)) and host.sequence == 0
    count = int(device.repeated())
    assert count == int(host.repeated())
    assert device.whole_passes(count) is whole
    assert host.whole_passes(count) is whole
