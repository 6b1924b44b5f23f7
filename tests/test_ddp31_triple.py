"""A real repeat of the very sample the `DistributedSampler` pads with went unwarned (ddp31, found with two real
processes in tests/test_ddp31.py: rank 0 presenting its first sample of an epoch again, the one the padding repeats
on rank 1). `allowed_repeats` counted samples presented more than once, and the padding presents a sample at most
twice: a third presentation of the padded sample is no padding, yet the epoch's 1 repeated sample was within
`update(gather=True)`'s allowance of world size - 1 = 1, so `end_epoch()` said nothing. The scores are not affected
(each sample keeps its first presentation); only the warning was missing. Fixed (gap31): `end_epoch()` compares the
epoch's extra presentations (presentations minus distinct samples presented) with `allowed_repeats`."""

from __future__ import annotations

import warnings

import torch

from harness import SampleTracker


def _repeat_warnings(indices: list[int], allowed: int) -> list[str]:
    tracker = SampleTracker(4)
    tracker.allowed_repeats = allowed  # what update(gather=True) sets in a world of 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.update(torch.tensor(indices), losses=torch.ones(len(indices)))
        tracker.end_epoch()
    return [str(w.message) for w in caught if "presented more than once" in str(w.message)]


def test_the_padding_repeat_alone_and_two_repeated_samples_behave_as_documented() -> None:
    assert _repeat_warnings([0, 1, 2, 3, 0], allowed=1) == []  # the padding: 1 sample twice, allowed
    said = _repeat_warnings([0, 1, 2, 3, 0, 1], allowed=1)  # 2 samples twice: one more than the padding's
    assert len(said) == 1 and said[0].startswith("SampleTracker: 2 sample(s) were presented more than once")


def test_a_sample_presented_three_times_under_an_allowance_of_one_is_warned() -> None:
    said = _repeat_warnings([0, 1, 2, 3, 0, 0], allowed=1)  # sample 0 three times: 2 extra presentations
    assert len(said) == 1 and said[0].startswith("SampleTracker: 1 sample(s) were presented more than once in epoch 1 "
                                                 "(first: [0]);")
    assert said[0].endswith("(2 presentation(s) beyond each sample's first this epoch, above "
                            "tracker.allowed_repeats = 1)")
