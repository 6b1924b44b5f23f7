"""Which epoch of `CSLTrainerCallback`'s record each epoch of the `Trainer` trains.

A `Trainer` resumed from a checkpoint goes on with epoch `global_step // update steps per epoch`
(`Trainer._inner_training_loop`, 4.46 to 5.x), counted in the batches of this attempt. Resumed in
the checkpoint's batches that is the checkpoint's own epoch; in other batches (an out-of-memory
retry under `auto_find_batch_size` resumes in smaller ones, or the user's new arguments) it is
elsewhere. In smaller batches the `Trainer` counts fewer epochs done and trains again the last
batches of an epoch the record had closed (seen: 2 epochs of 16 rows in batches of 8, resumed from
the first epoch's last step in batches of 7: the epoch's last 2 rows again, which csl counted as a
third epoch of the 2-epoch training); in larger ones it skips into a later epoch, so the epoch the
checkpoint left open ends there. `EpochMap` follows the `Trainer`'s epoch (`trainer_epoch`) and maps
it to the record's (`base` + it): batches of an epoch the record closed are presentations of that
epoch again, which the record does not take (it keeps a sample's first presentation of an epoch,
the tracker's rule), and an epoch the `Trainer` left is closed. The record then counts each sample
once per epoch the `Trainer` presented it in, as the training without the error does; samples the
`Trainer` skips are not trained in that epoch (the callback warns at such a resume, `_hf_retry`).
`base` is saved in each checkpoint: one saved inside an epoch trained again maps back to it.
"""

from __future__ import annotations

from typing import Any

from harness.integrations._common import DistributedRecorder

__all__ = ["EpochMap", "trainer_epoch"]


def trainer_epoch(args: Any, state: Any, dataloader: Any, done: int) -> int:
    """The epoch (from 0) the `Trainer` goes on with at `on_train_begin`: `global_step` over the
    update steps per epoch of this attempt's `dataloader`, the `Trainer`'s own count; `done` (the
    whole epochs of the state's `epoch`) for a dataloader without a length, whose epochs the
    `Trainer` counts by `max_steps`."""
    steps_done = int(state.global_step or 0)
    if not steps_done:
        return 0
    try:
        batches = len(dataloader)
    except TypeError:  # None, or an iterable dataset
        return done
    accumulation = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return steps_done // per_epoch


class EpochMap:
    """The `Trainer`'s epoch in progress (`epoch`, from 0) and the record's epochs before its epoch 0
    (`base`: a record continued by a later `train()`, or one whose epochs the `Trainer` counts
    otherwise after a resume in other batches)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.base = 0
        self.kept: int | None = None  # the base of the record an out-of-memory retry goes back to
        self.batch: int | None = None  # the batch this attempt counts its steps in (`RetryRecord`), saved
        self.saved_batch: int | None = None  # the resumed checkpoint's `batch`, when it has one

    def retrained(self, recorded_epochs: int) -> bool:
        """Whether the `Trainer` trains again an epoch the record has closed."""
        return self.base + self.epoch < recorded_epochs

    def begin(self, recorder: DistributedRecorder, args: Any, state: Any, dataloader: Any, done: int,
              base: Any) -> None:
        """At `on_train_begin`, after the record is resumed: `done` whole epochs in the state's
        `epoch`, `base` the checkpoint's (None: one saved before memprox saved it, or none)."""
        if base is None:
            base, self.kept = self.kept, None
        self.epoch = trainer_epoch(args, state, dataloader, done)
        tracker = recorder.tracker
        if base is None:  # the checkpoint's epochs are the record's (an empty record: the Trainer's epoch)
            recorder.close_epoch_before(done)
            base = tracker.epochs - done if tracker.epochs or recorder.batches else -self.epoch
        else:  # a checkpoint at an epoch's last step holds it open: done, whatever the Trainer counts
            recorder.close_epoch_before(int(base) + done)
        self.base = int(base)
        if self.base + self.epoch > tracker.epochs and recorder.batches and not tracker.finished:
            recorder.end_epoch()  # the Trainer goes on in a later epoch than the one the record left open
