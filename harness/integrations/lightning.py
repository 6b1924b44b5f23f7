"""CSL (and the other training-pass proxies) from a PyTorch Lightning run: one callback.

The two changes to your code:

1. the dataset returns each sample's index: wrap it, ``WithIndex(dataset)`` (items become
   ``(x, y, index)``);
2. ``training_step`` returns the per-sample losses and the batch's indices besides the loss::

       def training_step(self, batch, batch_idx):
           x, y, idx = batch
           logits = self(x)
           losses = F.cross_entropy(logits, y, reduction="none")
           return {"loss": losses.mean(), "losses": losses, "indices": idx}
           # optional, for forgetting / aum / el2n / ...: "logits": logits, "labels": y

then ``trainer = L.Trainer(callbacks=[csl := CSLCallback(len(dataset))])``, ``trainer.fit(...)``,
and ``csl.scores()``, ``csl.suspects(20)``; ``CSLCallback(..., images=..., plot_path="suspects.png")``
draws the suspects when training ends (rank 0). The callback passes each batch to
`SampleTracker.update` unchanged and closes the tracker's epoch at each training epoch's end, so
the scores are those of a plain loop on the same batches, bitwise. Under DDP every rank's batch is
gathered first (`harness.integrations._common`), so every rank holds the scores of all samples.

Lightning is imported from ``lightning`` (``lightning.pytorch``), else ``pytorch_lightning``:
``pip install 'memprox[lightning]'``. The tracker's state goes into Lightning's checkpoints (the
callback's `state_dict`), so a fit resumed from a checkpoint (``fit(..., ckpt_path=...)``) goes on
with the epochs recorded before it.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from harness.errors import HarnessError
from harness.integrations._common import DistributedRecorder, OneTraining, WithIndex, check_indices, concurrent_training
from harness.tracker import SampleTracker
from harness.tracker.report import check_png_path
from proxies import Proxy

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the standalone package
    try:
        from pytorch_lightning import Callback  # type: ignore[assignment]  # the standalone twin of that class
    except ImportError as exc:
        raise ImportError("harness.integrations.lightning needs Lightning: pip install 'memprox[lightning]'") from exc

__all__ = ["CONTRACT", "CSLCallback", "WithIndex"]

CONTRACT = ('training_step must return {"loss": losses.mean(), "losses": losses, "indices": idx} with the '
            'per-sample losses (reduction="none") and the batch\'s sample indices (wrap the dataset in '
            'harness.integrations.WithIndex); add "logits" and "labels" for the proxies beyond csl')

_CONCURRENT = concurrent_training("CSLCallback", "Fits in threads (Optuna's n_jobs > 1 among them) need a CSLCallback "
                                  "each: make it inside the objective, or use n_jobs=1")


class CSLCallback(Callback):
    """Records per-sample signals of every training batch into a `SampleTracker`.

    Args:
        n: number of training samples (``len(dataset)``); indices are in [0, n).
        proxies, labels, running_sums, suggest: as `SampleTracker` (default: csl alone from losses,
            every training-pass proxy and the suggested label when ``training_step`` also returns
            logits and labels).
        images: all n training images in index order, to draw the suspects when training ends.
        plot_path: where that figure goes (needs ``images``); ``k``, ``by``, ``classes``: its top k,
            ranking proxy and class names.
    """

    def __init__(
        self,
        n: int,
        *,
        proxies: Sequence[str | Proxy] | str | None = None,
        labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        running_sums: bool = False,
        suggest: bool | None = None,
        images: np.ndarray | torch.Tensor | None = None,
        plot_path: str | Path | None = None,
        k: int = 16,
        by: str = "csl",
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if plot_path is not None and images is None:
            raise HarnessError("CSLCallback(plot_path=...) needs images= (all n training images in index order)")
        if plot_path is not None:
            check_png_path(plot_path)  # said now, not when training has ended
        self.tracker = SampleTracker(n, proxies=proxies, labels=labels, running_sums=running_sums, suggest=suggest)
        self._recorder = DistributedRecorder(self.tracker)
        self.images, self.plot_path, self.k, self.by, self.classes = images, plot_path, k, by, classes
        self.figure: Path | None = None
        self._loaded: dict[str, Any] | None = None  # a checkpoint's state, until the fit starts
        self._module: weakref.ref | None = None  # the model the record is of (the first fit's)
        self.one_training = OneTraining()  # claimed from setup to on_fit_end: one fit records at a time

    # -- Lightning hooks ------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if outputs is None:  # Lightning skips a batch whose training_step returned None: so do we
            return
        if not isinstance(outputs, Mapping) or "losses" not in outputs or "indices" not in outputs:
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise HarnessError(f"CSLCallback: training_step returned {got}; {CONTRACT}")
        check_indices(outputs["indices"], "CSLCallback", CONTRACT)
        self._recorder.update(outputs["indices"], losses=outputs["losses"], logits=outputs.get("logits"),
                              labels=outputs.get("labels"))

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":  # before Lightning restores a checkpoint's state into this callback
            self.one_training.claim(_CONCURRENT)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker.finished and self._loaded is None:
            raise HarnessError("CSLCallback: scores() ended this callback's record; give this fit a new CSLCallback")
        self._check_same_model(pl_module)
        self._resume(trainer, pl_module)
        _warn_mid_epoch_resume(trainer, self._recorder.batches > 0)

    def _check_same_model(self, pl_module: Any) -> None:
        """A second fit continues the record, which is right for the same model trained on; another
        model's losses would add to the first one's (csl summed over two trainings), so say so. Not
        when the fit resumes from a checkpoint with this callback's state: the record becomes the
        checkpoint's, and a resumed fit is handed a new model object as a rule."""
        before = self._module() if self._module is not None else None
        if (self._module is not None and before is not pl_module and self._loaded is None
                and (self.tracker.epochs or self._recorder.batches)):
            warnings.warn("CSLCallback: this fit trains another model than the fit before, and its losses add to "
                          "that model's record (csl would sum both trainings); give each model its own CSLCallback",
                          RuntimeWarning, stacklevel=3)
        self._module = weakref.ref(pl_module)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # a fit resumed from a checkpoint of its last epoch trains nothing and calls no on_train_start
        self._resume(trainer, pl_module)
        self.one_training.release()

    def _resume(self, trainer: Any, pl_module: Any) -> None:
        if self._loaded is not None:  # restored before the model reached its device: put the record there
            saved, self._loaded = self._loaded, None
            self._recorder.resume(saved, pl_module.device, "CSLCallback", getattr(trainer, "current_epoch", 0))
        elif self.tracker.finished:
            return
        epoch = getattr(trainer, "current_epoch", 0)
        self._recorder.close_epoch_before(epoch)  # saved after the epoch's last batch: Lightning resumes after it
        if epoch > 0 and self.tracker.epochs == 0 and self._recorder.batches == 0:
            warnings.warn(f"CSLCallback: the fit resumes at epoch {trainer.current_epoch} but the callback has no "
                          f"record of the epochs before (a checkpoint saved without its state, by an older memprox "
                          f"or by a CSLCallback with other proxies or running_sums); csl will sum the epochs from "
                          f"here on only", RuntimeWarning, stacklevel=3)

    @property
    def state_key(self) -> str:
        """Where Lightning keeps this callback's state in a checkpoint: one per proxy selection, so that
        callbacks with other proxies (or running_sums) can train side by side."""
        selected = self.tracker._selection.selected
        return self._generate_state_key(proxies=None if selected is None else [p.label for p in selected],
                                        running_sums=bool(self.tracker.running_sums))

    def state_dict(self) -> dict[str, Any]:
        """What Lightning saves in a checkpoint: the tracker's record so far (`SampleTracker.state_dict`)."""
        if self._loaded is not None:  # a checkpoint saved before the resumed fit started
            return self._loaded
        if self.tracker.finished:  # trainer.save_checkpoint() after scores(): the record is closed
            return {}
        return self._recorder.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed fit's checkpoint: the record goes on from there (loaded at the fit's start, on the
        model's device; refused there if it is another dataset's)."""
        self._loaded = state_dict if "tracker" in state_dict else None

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._recorder.batches == 0:
            if getattr(trainer, "sanity_checking", False):
                return
            raise HarnessError(f"CSLCallback: no batch of this epoch was recorded; {CONTRACT}")
        self._recorder.end_epoch()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """A fit that raised mid-epoch keeps whole epochs only (`DistributedRecorder.drop_open_epoch`);
        not a fit refused because another thread's fit records here (that fit's epoch is its own)."""
        if self.one_training.release():
            self._recorder.drop_open_epoch(f"CSLCallback: the fit stopped by {type(exception).__name__}")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.plot_path is not None and getattr(trainer, "is_global_zero", True):
            self.figure = self.plot_suspects(self.images, self.k, by=self.by, path=self.plot_path,
                                             classes=self.classes)

    # -- results (the tracker's) ---------------------------------------------------------------
    def scores(self, proxies: Sequence[str | Proxy] | str | None = None) -> pd.DataFrame:
        """`SampleTracker.scores`: one row per sample, one column per proxy (higher = more suspicious)."""
        _check_recorded(self)
        return self.tracker.scores(proxies)

    def suspects(self, k: int = 20, by: str | Proxy = "csl", classes: Sequence[str] | None = None) -> pd.DataFrame:
        """`SampleTracker.suspects`: the k highest-scoring samples with given, predicted and suggested label."""
        _check_recorded(self)
        return self.tracker.suspects(k, by, classes)

    def plot_suspects(self, images: Any, k: int = 16, *, by: str | Proxy = "csl", path: str | Path = "suspects.png",
                      classes: Sequence[str] | None = None) -> Path:
        """`SampleTracker.plot_suspects`: a captioned grid of the k suspects' images."""
        _check_recorded(self)
        return self.tracker.plot_suspects(images, k, by=by, path=path, classes=classes)


def _check_recorded(csl: CSLCallback) -> None:
    """Before results: a record with no epoch says where the fit recorded instead."""
    tracker = csl.tracker
    if not (tracker.finished or tracker.epochs or csl._recorder.batches or csl._loaded is not None):
        raise HarnessError("CSLCallback: no epoch was recorded in this process. Call scores() after fit(); a "
                           "fit launched in processes of its own (strategy='ddp_spawn' or 'ddp_notebook', "
                           "devices > 1 in a notebook), or by Ray Tune / Ray Train in their workers, records "
                           "there and its record does not come back: use strategy='ddp' (a script), or read "
                           "the scores inside the fit (on_train_end, rank 0)")


def _warn_mid_epoch_resume(trainer: Any, is_open: bool) -> None:
    """A fit resumed from a checkpoint saved within an epoch (`every_n_train_steps`, `max_steps`)
    does not train what the uninterrupted fit trains: say what the record holds. Lightning either
    finishes the cut epoch with its remaining batches, drawn from the start of a plain DataLoader
    (so, with b of B batches done, the first min(b, B - b) are trained twice and the last as many
    not at all, where the loader draws the cut epoch's order again; a random sampler draws another,
    and which samples are trained twice is chance), or, where the cut epoch counts as done
    (max_steps, resumed by epochs), starts the next.
    `is_open`: whether the callback's record holds the cut epoch still open."""
    cut = _mid_epoch_cut(trainer)
    if cut is None:
        return
    left, twice = cut.batches - cut.batches_done, cut.batches_twice
    if cut.resumable and cut.continues and is_open:
        return  # the loader goes on where it stopped, and so does the open epoch: as if uninterrupted
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
