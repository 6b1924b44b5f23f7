"""`CSLTrainer`'s record across the `Trainer`'s out-of-memory retries (`auto_find_batch_size`).

With `auto_find_batch_size=True` the `Trainer` runs its training loop again, with a smaller batch,
when an attempt runs out of memory (`accelerate`'s `find_executable_batch_size`): the retry starts
over from the attempt's first step (epoch 0, or the resumed checkpoint's step), calls
`on_train_begin` again and never leaves `train()`, so `CSLTrainer.train`'s drop of a failed epoch
did not run. The failed attempt's batches stayed in the open epoch, the retry's `on_train_begin`
closed them as an epoch of their own, and the retried epochs came on top: a 2-epoch training
recorded 3, csl summing a dead half epoch (seen: out of memory at the second batch; `scores()`
blamed a sampler for the samples the half epoch missed). The record of the retried training must be
the one the failed attempt started from: it is kept at each attempt's `on_train_begin` (a copy when
it holds epochs, i.e. the training resumes or continues a record) and put back before the retry.

A retry in a training resumed from a checkpoint resumes it with another batch than the checkpoint's
(the first attempt takes the checkpoint's, `train_batch_size` in its state): the `Trainer` counts
the steps done in batches of the new size, so it goes on elsewhere than the checkpoint stopped
(seen: 8 rows a batch cut to 7 after one step of 8 trained sample 5 twice in its epoch; resumed
from an epoch's last step, the epoch's last 2 rows were trained again after the record had closed
that epoch). The record follows the `Trainer`'s epochs (`_hf_epochs.EpochMap`), so it counts each
sample once per epoch it was presented in, as the training without the error; the batches, the
weights and the samples the `Trainer` skips differ from it, and nothing said why: said in words.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from transformers import TrainerCallback

__all__ = ["RetryRecord"]


def _reduces_batch(exc: BaseException) -> bool:
    """Whether `find_executable_batch_size` retries after `exc` (its own test)."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(exc, Exception) and bool(should_reduce_batch_size(exc))


class RetryRecord(TrainerCallback):
    """Keeps what the record of `csl` (a `CSLTrainerCallback`) held when a training attempt began,
    and puts it back when the `Trainer` retries that attempt with a smaller batch. Added after the
    `CSLTrainerCallback`, so its `on_train_begin` sees the record as that callback left it."""

    def __init__(self, csl: Any) -> None:
        self.csl = csl
        self.begun = False  # this attempt reached on_train_begin (an attempt can fail before it)
        self.start: dict[str, Any] | None = None  # the record then, when it held any (else empty)
        self.batch_size: int | None = None  # this attempt's (`CSLTrainer._inner_training_loop`)
        #: the batch the resumed checkpoint's steps were made in: its `csl_tracker.pt` says (the Trainer
        #: keeps the first run's `train_batch_size` in a resumed state, so a resized resume's checkpoint
        #: names the batch of the run before it), else the Trainer's state
        self.checkpoint_batch: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        recorder = self.csl._recorder
        held = bool(self.csl.tracker.epochs or recorder.batches)
        self.begun = True
        kept = {**recorder.state(), "base": self.csl.epochs.base}
        self.start = copy.deepcopy(kept) if args.auto_find_batch_size and held else None
        self.csl.epochs.batch = self.batch_size  # saved with the record, for a resume from its checkpoints
        self.checkpoint_batch = self.csl.epochs.saved_batch or self.checkpoint_batch  # a retry's: the first's
        saved = self.checkpoint_batch or getattr(state, "train_batch_size", None)  # a fresh state's: this one
        if state.global_step and saved and self.batch_size and saved != self.batch_size:
            _warn_resized_resume(int(state.global_step), int(saved), int(self.batch_size))

    def failed(self, args: Any, exc: BaseException) -> None:
        """An attempt of the training loop raised: before a retry, the record goes back to its start."""
        if not (args.auto_find_batch_size and self.begun and _reduces_batch(exc)):
            return
        epoch = self.csl.tracker.epochs + 1
        self.csl.restart()
        if self.start is not None:  # a new tracker takes a state like a checkpoint's (a copy: it may change)
            self.csl._recorder.resume(copy.deepcopy(self.start), None, "CSLTrainerCallback", 0)
            self.csl.epochs.kept = int(self.start["base"])  # the retry's on_train_begin maps its epochs with it
        warnings.warn(f"CSLTrainer: the training ran out of memory in epoch {epoch}; the Trainer retries it with a "
                      f"smaller batch (auto_find_batch_size) from its first step, so what this attempt recorded is "
                      f"dropped and the record goes back to the {self.csl.tracker.epochs} epoch(s) it held when the "
                      f"attempt began. The retry trains on from the weights the failed attempt reached",
                      RuntimeWarning, stacklevel=4)


def _warn_resized_resume(steps: int, saved: int, now: int) -> None:
    warnings.warn(f"CSLTrainer: the training resumes from a checkpoint saved after {steps} step(s) in batches of "
                  f"{saved}, in batches of {now} (an out-of-memory retry, auto_find_batch_size, or other arguments): "
                  f"the Trainer counts the steps done in batches of {now}, so it goes on elsewhere than the "
                  f"checkpoint stopped: samples of the epoch in progress are trained twice or not at all, or the last "
                  f"batches of an epoch the checkpoint had finished are trained again. The record keeps each "
                  f"sample's first presentation of an epoch (batches of an epoch it closed, trained again, are not "
                  f"recorded) and misses the samples skipped, so the scores are not those of an uninterrupted run; "
                  f"for those, resume in batches of {saved}, or train from the start in batches of {now}",
                  RuntimeWarning, stacklevel=4)
