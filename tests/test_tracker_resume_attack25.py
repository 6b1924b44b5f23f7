"""A tracker made with suggest=True (or the default) resumed from a state saved by one that did not
record the class probabilities (suggest=False, or over the size bound) had no suggested label and said
nothing: the suggestion was asked for and silently absent. `suspects()` now says why, once."""

from __future__ import annotations

import warnings

import pytest
import torch

from harness.tracker import SampleTracker

N, C = 20, 3
LABELS = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(0))
LOGITS = [torch.randn(N, C, generator=torch.Generator().manual_seed(epoch)) for epoch in range(4)]


def _feed(tracker: SampleTracker, epochs: range) -> None:
    for epoch in epochs:
        tracker.update(torch.arange(N), logits=LOGITS[epoch], labels=LABELS)
        tracker.end_epoch()


def _resumed(saved_with: bool | None, resumed_with: bool | None) -> SampleTracker:
    first = SampleTracker(N, labels=LABELS, suggest=saved_with)
    _feed(first, range(2))
    second = SampleTracker(N, labels=LABELS, suggest=resumed_with)
    second.load_state_dict(first.state_dict())
    _feed(second, range(2, 4))
    return second


@pytest.mark.parametrize("resumed_with", [True, None])
def test_a_suggestion_asked_for_and_absent_after_resuming_is_said_once(resumed_with: bool | None) -> None:
    tracker = _resumed(False, resumed_with)
    with pytest.warns(UserWarning, match=r"no suggested label: the tracker state was saved by a tracker that did "
                                         r"not record the class probabilities \(suggest=False"):
        table = tracker.suspects(5)
    assert list(table.columns) == ["index", "label", "predicted", "score"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.suspects(5)  # said once per tracker


def test_resuming_with_suggest_false_or_from_sums_says_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "suggested" not in _resumed(False, False).suspects(5).columns
        assert "suggested" not in _resumed(None, False).suspects(5).columns
        resumed = _resumed(None, True).suspects(N)
    whole = SampleTracker(N, labels=LABELS, suggest=True)
    _feed(whole, range(4))
    assert resumed.equals(whole.suspects(N))  # the sums resumed: as an uninterrupted tracker's
