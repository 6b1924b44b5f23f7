"""Whether an epoch's repeated presentations came in whole passes over its samples: the sign of a loop that
calls `end_epoch()` once after several epochs (or passes batch positions for indices), which the
repeated-presentations warning then tells what to do (`Presentations.warn`).

Whole passes: no sample came again before every sample presented had come once. A shuffling DataLoader with
`drop_last=True` leaves out r = N mod batch samples a pass, a different r each time: its second pass repeats
samples from N - r on, and some samples come once only (those the other passes dropped). Those passes are told
apart from a sampler with replacement by their batches (`EpochBatches`, counted by `update()`): all of one size
B, the first repeat in the batch after a first pass of at least two whole batches that leaves fewer than B
samples out, the epoch a whole number of such passes, and at most 2 (B - 1) samples presented once (a sample
presented once was dropped by every other pass but one; each drops fewer than B). A sampler with replacement
repeats a sample after about sqrt(N) draws, long before N - B; with N below a few dozen and B near N / 3 a
random one can still pass (about 1 in 500 of such loops: the hint is advice, the warning comes either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: the hint's opening, by the kind of whole passes (`whole_passes`)
OPENINGS = {
    "all": "Every sample this epoch presented came again, in whole passes over them (none before all had come once)",
    "dropped": ("Nearly every sample this epoch presented came again, in whole passes over them (none before all "
                "had come once, but for fewer than a batch of them a pass left out: a shuffling DataLoader with "
                "drop_last=True drops another N mod batch_size samples each epoch)"),
}


@dataclass
class EpochBatches:
    """The open epoch's non-empty batches as `update()` got them (the log records them merged): the smallest and
    the largest size, and the samples in all. `known` is False for an epoch resumed mid-way from a state saved
    before they were kept: that epoch's earlier batches are not counted, and it gets no drop_last hint."""

    smallest: int = 0
    largest: int = 0
    total: int = 0
    known: bool = True

    def add(self, size: int) -> None:
        if size > 0:
            self.smallest = size if not self.total else min(self.smallest, size)
            self.largest = max(self.largest, size)
            self.total += size

    def clear(self) -> None:
        """At `end_epoch()` or `discard_epoch()`: the next epoch's are counted from none."""
        self.smallest = self.largest = self.total = 0
        self.known = True

    def state(self) -> list[int] | None:
        """[smallest, largest, total] for `state_dict()`; None: not known."""
        return [self.smallest, self.largest, self.total] if self.known else None

    def restore(self, value: Any, started: bool) -> None:
        """Load `state()`'s value; absent: a state saved before it was kept, known only when the open epoch had
        not `started`. A ValueError, before anything is loaded, when it is damaged (`state.check` says so)."""
        if value is not None and not _valid(value):
            raise ValueError(f"batches = {value!r}")
        self.smallest, self.largest, self.total = (0, 0, 0) if value is None else value
        self.known = value is not None or not started


def _valid(value: Any) -> bool:
    """A saved [smallest, largest, total] that `update()` could have counted."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return False
    smallest, largest, total = value
    if not total:
        return smallest == largest == 0
    return 1 <= smallest <= largest <= total


def whole_passes(count: int, presented: int, first_repeat: int | None, batches: EpochBatches) -> str | None:
    """The kind of whole passes the epoch's repeats came in (an `OPENINGS` key), else None: `count` samples
    presented more than once, `presented` in all, `first_repeat` presentations before the first repeat (None:
    unknown). "all": every sample came again, none before all had come once. "dropped": as a shuffling
    DataLoader with drop_last=True gives (module docstring)."""
    if first_repeat is None or not presented or not count:
        return None
    if count >= presented and first_repeat >= presented:
        return "all"
    size = batches.largest
    if not batches.known or size < 2 or batches.smallest != size:  # drop_last: every batch full
        return None
    first_pass = first_repeat // size * size  # the whole batches before the one with the first repeat
    if first_pass < 2 * size or first_pass <= presented - size or batches.total % first_pass:
        return None
    return "dropped" if batches.total >= 2 * first_pass and presented - count <= 2 * (size - 1) else None
