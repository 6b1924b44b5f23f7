"""What a Lightning fit with a `CSLCallback` continues (`harness.integrations.lightning`): the record of a
checkpoint it resumes from, or the record of the fit before, and what a resume cut within an epoch does to
the record (`warn_mid_epoch_resume`).

Its own module because resuming is one job apart from recording batches: Lightning hands the callback a
checkpoint's state before the model is on its device, the record can only go on once it is, and each
way a fit can start (a second fit, another model, a checkpoint without the callback's state, a cut
epoch) needs its own answer. The tests hold classes to 150 lines, and `CSLCallback` keeps the hooks."""

from __future__ import annotations

import warnings
import weakref
from typing import Any, NamedTuple

import torch

from harness.integrations._common import DistributedRecorder


class FitContinuity:
    """Which record a fit goes on with. `loaded`: a checkpoint's state (`CSLCallback.load_state_dict`),
    kept until the fit starts and the model is on its device; the model of the first fit is kept (weakly)
    to tell a second fit of another model, whose losses would add to the first one's."""

    def __init__(self, recorder: DistributedRecorder) -> None:
        self.recorder = recorder
        self.loaded: dict[str, Any] | None = None  # a checkpoint's state, until the fit starts
        self._module: weakref.ref | None = None  # the model the record is of (the first fit's)

    def check_same_model(self, pl_module: Any) -> None:
        """A second fit continues the record, which is right for the same model trained on; another
        model's losses would add to the first one's (csl summed over two trainings), so say so. Not
        when the fit resumes from a checkpoint with this callback's state: the record becomes the
        checkpoint's, and a resumed fit is handed a new model object as a rule."""
        before = self._module() if self._module is not None else None
        if (self._module is not None and before is not pl_module and self.loaded is None
                and (self.recorder.tracker.epochs or self.recorder.batches)):
            warnings.warn("CSLCallback: this fit trains another model than the fit before, and its losses add to "
                          "that model's record (csl would sum both trainings); give each model its own CSLCallback",
                          RuntimeWarning, stacklevel=3)
        self._module = weakref.ref(pl_module)

    def resume(self, trainer: Any, pl_module: Any) -> None:
        """At the fit's start (and end: a fit resumed at its last epoch has no start): the checkpoint's
        record onto the model's device, and the epochs closed up to the one Lightning resumes at."""
        tracker = self.recorder.tracker
        if self.loaded is not None:  # restored before the model reached its device: put the record there
            saved, self.loaded = self.loaded, None
            self.recorder.resume(saved, pl_module.device, "CSLCallback", getattr(trainer, "current_epoch", 0))
        elif tracker.finished:
            return
        epoch = getattr(trainer, "current_epoch", 0)
        self.recorder.close_epoch_before(epoch)  # saved after the epoch's last batch: Lightning resumes after it
        if epoch > 0 and tracker.epochs == 0 and self.recorder.batches == 0:
            warnings.warn(f"CSLCallback: the fit resumes at epoch {trainer.current_epoch} but the callback has no "
                          f"record of the epochs before (a checkpoint saved without its state, by an older memprox "
                          f"or by a CSLCallback with other proxies or running_sums); csl will sum the epochs from "
                          f"here on only", RuntimeWarning, stacklevel=3)


def warn_mid_epoch_resume(trainer: Any, is_open: bool) -> bool:
    """A fit resumed from a checkpoint saved within an epoch (`every_n_train_steps`, `max_steps`)
    does not train what the uninterrupted fit trains: say what the record holds. Lightning either
    finishes the cut epoch with its remaining batches, drawn from the start of a plain DataLoader
    (so, with b of B batches done, the first min(b, B - b) are trained twice and the last as many
    not at all, where the loader draws the cut epoch's order again; a random sampler draws another,
    and which samples are trained twice is chance), or, where the cut epoch counts as done
    (max_steps, resumed by epochs), starts the next.
    `is_open`: whether the callback's record holds the cut epoch still open. Returns whether that open
    epoch goes on with batches drawn from the loader's start again: its repeats are then this resume's, not
    whole passes of a loop missing `end_epoch()` (`Presentations.not_whole_passes`)."""
    cut = _mid_epoch_cut(trainer)
    if cut is None:
        return False
    left, twice = cut.batches - cut.batches_done, cut.batches_twice
    if cut.resumable and cut.continues and is_open:
        return False  # the loader goes on where it stopped, and so does the open epoch: as if uninterrupted
    if not cut.continues:
        what = (f"Lightning starts the next epoch: the samples of the cut epoch's last {left} batch(es) are not "
                f"trained in it, and count one epoch fewer (the record closed it)")
    elif cut.resumable:
        what = ("The epoch cut short (max_steps) was closed in the record, so the rest of it is recorded as an "
                "epoch of its own: one epoch more than the uninterrupted fit, split in two halves")
    elif cut.replays:
        what = (f"Lightning finishes that epoch with {left} batch(es) drawn from the start of the DataLoader (not "
                f"resumable), so the samples of its first {twice} batch(es) are trained twice in it and those of "
                f"its last {twice} not at all. ")
        what += ("In the record's open epoch each sample keeps its first presentation: those trained twice keep "
                 f"their loss from before the checkpoint and those of the last {twice} batch(es) have none in "
                 "this epoch" if is_open else
                 "The epoch cut short (max_steps) was closed in the record, and the batches trained after the "
                 f"checkpoint are recorded as another, shorter epoch: the samples of the first {twice} "
                 f"batch(es) count one epoch more, those of the last {twice} one fewer")
    else:  # a random sampler: the batches after the resume come from the first order it draws here
        what = (f"Lightning finishes that epoch with {left} batch(es) drawn from the start of the DataLoader (not "
                f"resumable), in the first order its random sampler draws in this process, ")
        what += ((f"which is the cut epoch's only if its generator (torch's global one, without generator=) is "
                  f"seeded as in the fit that saved the checkpoint: then the samples of its first {twice} "
                  f"batch(es) are trained twice in it and those of its last {twice} not at all; else " if cut.first
                  else "not the cut epoch's (a later one, whose order the sampler drew later): ")
                 + "some of the samples trained before the checkpoint are trained twice in it and some others not "
                   "at all, by chance. ")
        what += ("In the record's open epoch each sample keeps its first presentation: those trained twice keep "
                 "their loss from before the checkpoint and those not trained have none in this epoch" if is_open
                 else "The epoch cut short (max_steps) was closed in the record, and the batches trained after "
                 "the checkpoint are recorded as another, shorter epoch: the samples in both count one epoch "
                 "more, those in neither one fewer")
    warnings.warn(f"CSLCallback: the fit resumes from a checkpoint saved within an epoch, after {cut.steps} of "
                  f"its {cut.per_epoch} optimizer steps ({cut.batches_done} of {cut.batches} batches). {what}. "
                  f"The scores (csl, and the per-epoch proxies) are not those of an uninterrupted fit; for "
                  f"those, resume from a checkpoint saved at an epoch's end (with max_steps a multiple of the "
                  f"{cut.per_epoch} steps per epoch)", RuntimeWarning, stacklevel=3)
    return cut.continues and not cut.resumable and is_open


class _Cut(NamedTuple):
    """Where a resumed fit's checkpoint cut its epoch, as Lightning restored it."""

    steps: int  # optimizer steps of the cut epoch done
    per_epoch: int  # optimizer steps per epoch
    batches_done: int  # batches of the cut epoch done
    batches: int  # batches per epoch
    resumable: bool  # every training DataLoader has state_dict / load_state_dict
    continues: bool  # Lightning finishes the cut epoch (else it starts the next)
    replays: bool  # started over, every loader draws the cut epoch's order again (`_replays`)
    first: bool  # the cut epoch is the fit's first (a seeded random sampler's first order is its own)

    @property
    def batches_twice(self) -> int:
        """Batches trained twice in the cut epoch, and as many never, where the loader starts over."""
        return min(self.batches_done, self.batches - self.batches_done)


def _mid_epoch_cut(trainer: Any) -> _Cut | None:
    """For a fit resumed from a checkpoint saved within an epoch (Lightning's own test,
    `_TrainingEpochLoop.reset`): where it was cut; else None. The batches done come from the restored
    batch progress (with gradient accumulation they are not steps x accumulation at an epoch's last,
    short step), and whether the cut epoch goes on from the fit loop's `restarting`: a fit stopped by
    max_steps and resumed with max_epochs only starts the next epoch."""
    batches = getattr(trainer, "num_training_batches", float("inf"))
    if getattr(trainer, "ckpt_path", None) is None or not isinstance(batches, int) or batches < 1:
        return None
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1)))
    per_epoch = -(-batches // accumulate)
    steps = int(trainer.global_step) % per_epoch
    if not steps:
        return None
    fit_loop = trainer.fit_loop
    ready = getattr(getattr(getattr(getattr(fit_loop, "epoch_loop", None), "batch_progress", None), "current", None),
                    "ready", None)
    done = ready if isinstance(ready, int) and 0 < ready < batches else min(batches - 1, steps * accumulate)
    loaders = getattr(getattr(fit_loop, "_combined_loader", None), "flattened", [])
    resumable = bool(loaders) and all(callable(getattr(loader, "state_dict", None))
                                      and callable(getattr(loader, "load_state_dict", None)) for loader in loaders)
    return _Cut(steps, per_epoch, done, batches, resumable, bool(getattr(fit_loop, "restarting", True)),
                all(_replays(loader) for loader in loaders), int(getattr(trainer, "current_epoch", 0)) == 0)


def _replays(loader: Any) -> bool:
    """Whether a loader started over draws the cut epoch's order again: unshuffled, or a sampler
    seeded per epoch by `set_epoch` (which Lightning calls). A random sampler (`shuffle=True`, with
    or without a generator) draws another order each time it is iterated, and the resumed process
    draws its first one: the replayed batches hold other samples than the cut epoch's first ones."""
    sampler = getattr(loader, "sampler", None)
    return (sampler is None or isinstance(sampler, torch.utils.data.SequentialSampler)
            or callable(getattr(sampler, "set_epoch", None)))
