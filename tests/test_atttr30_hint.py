"""atttr30: the end_epoch() hint of the repeated-presentations warning (34f3bea: only for whole passes) on
trackers resumed mid-epoch. A state saved before `first_repeat` was kept (da3a1ae and earlier) has no
record of where the epoch's first repeat came: the repeat the resumed loop makes next was taken for the
first, so an epoch whose samples came again before all had come once was told to call end_epoch()."""

from __future__ import annotations

import warnings

import torch

from harness import SampleTracker

N, C = 10, 2
LOGITS = torch.linspace(-1, 1, N * C).reshape(N, C)
LABELS = torch.arange(N) % C


def _update(tracker: SampleTracker, idx: list[int]) -> None:
    i = torch.tensor(idx)
    tracker.update(i, logits=LOGITS[i], labels=LABELS[i])


def _warning(tracker: SampleTracker) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.end_epoch()
    (message,) = [str(w.message) for w in caught if "presented more than once" in str(w.message)]
    return message


def _resumed(state: dict) -> SampleTracker:
    tracker = SampleTracker(N)
    tracker.load_state_dict(state)
    return tracker


def test_an_old_state_with_an_early_repeat_gets_no_whole_passes_hint() -> None:
    """0..4, then 0..2 again (a repeat before 5..9 came), saved; then 5..9 and 3..9: every sample came twice,
    not in whole passes. The uninterrupted tracker gives no hint, nor may one resumed from an old state."""
    tracker = SampleTracker(N)
    _update(tracker, [0, 1, 2, 3, 4])
    _update(tracker, [0, 1, 2])
    state = tracker.state_dict()
    old = {**state, "signals": {k: v for k, v in state["signals"].items() if k != "first_repeat"}}
    messages = []
    for t in (tracker, _resumed(state), _resumed(old)):
        _update(t, [5, 6, 7, 8, 9])
        _update(t, [3, 4, 5, 6, 7, 8, 9])
        messages.append(_warning(t))
    assert "10 sample(s) were presented more than once in epoch 1" in messages[0]
    assert "whole passes" not in messages[0]
    assert messages[1] == messages[0]
    assert messages[2] == messages[0]


def test_an_old_state_of_whole_passes_so_far_still_gets_the_hint() -> None:
    """Saved before any repeat (an old state then holds all there is to know): a loop that calls end_epoch()
    once after two epochs is told to call it after each, resumed or not."""
    tracker = SampleTracker(N)
    _update(tracker, list(range(N)))
    state = tracker.state_dict()
    old = {**state, "signals": {k: v for k, v in state["signals"].items() if k != "first_repeat"}}
    messages = []
    for t in (tracker, _resumed(old)):
        _update(t, list(range(N)))
        messages.append(_warning(t))
    assert "call end_epoch() after each epoch" in messages[0]
    assert messages[1] == messages[0]
