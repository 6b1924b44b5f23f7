"""A refused call changes nothing: what `SampleTracker.update` and `eval_epoch` put back when they raise.

A tracker makes its device state (buffers, checks, the batch log) at the first call that tells it a
device, and learns the class count from the first logits. Made by a call that was then refused (an
`eval_epoch` with the wrong labels before any `update`), they stayed: `load_state_dict` was refused
afterwards ("resumes a new tracker"), an `update` on the GPU was refused as off-device, and a loaded
state was written to the refused call's device. The fix the error names must find the tracker as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness.tracker.fields import TrackerFields

#: what `_ensure_device` makes or uses up (a loaded state, a copy's held batches), and the class count
KEPT = ("num_classes", "_device", "_inputs", "_signals", "_log", "_saved", "_replay", "_class_probs")


@contextmanager
def unchanged_if_refused(tracker: TrackerFields) -> Iterator[None]:
    """Put back the tracker's device state and class count when the block raises."""
    kept = {name: getattr(tracker, name) for name in KEPT}
    try:
        yield
    except BaseException:
        for name, value in kept.items():
            setattr(tracker, name, value)
        raise
