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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.errors import HarnessError
from harness.integrations._common import DistributedRecorder, OneTraining, WithIndex, check_indices, concurrent_training
from harness.integrations.lightning_resume import FitContinuity, warn_mid_epoch_resume
from harness.tracker import SampleTracker
from harness.tracker.class_names import checked_classes
from harness.tracker.report import check_png_path
from harness.values import expand_home
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
        if plot_path is not None:  # said now, not when training has ended
            plot_path = expand_home(check_png_path(plot_path), "CSLCallback(plot_path=...)")
        classes = checked_classes(classes, "CSLCallback")  # said now too
        self.tracker = SampleTracker(n, proxies=proxies, labels=labels, running_sums=running_sums, suggest=suggest)
        self._recorder = DistributedRecorder(self.tracker)
        self.images, self.plot_path, self.k, self.by, self.classes = images, plot_path, k, by, classes
        self.figure: Path | None = None
        self._fit = FitContinuity(self._recorder)  # a checkpoint's record, or the fit before's, to go on with
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
        if self.tracker.finished and self._fit.loaded is None:
            raise HarnessError("CSLCallback: scores() ended this callback's record; give this fit a new CSLCallback")
        self._fit.check_same_model(pl_module)
        self._fit.resume(trainer, pl_module)
        if warn_mid_epoch_resume(trainer, self._recorder.batches > 0):  # its first batches come again
            self._recorder.not_whole_passes()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # a fit resumed from a checkpoint of its last epoch trains nothing and calls no on_train_start
        self._fit.resume(trainer, pl_module)
        self.one_training.release()

    @property
    def state_key(self) -> str:
        """Where Lightning keeps this callback's state in a checkpoint: one per proxy selection, so that
        callbacks with other proxies (or running_sums) can train side by side."""
        selected = self.tracker._selection.selected
        return self._generate_state_key(proxies=None if selected is None else [p.label for p in selected],
                                        running_sums=bool(self.tracker.running_sums))

    def state_dict(self) -> dict[str, Any]:
        """What Lightning saves in a checkpoint: the tracker's record so far (`SampleTracker.state_dict`)."""
        if self._fit.loaded is not None:  # a checkpoint saved before the resumed fit started
            return self._fit.loaded
        if self.tracker.finished:  # trainer.save_checkpoint() after scores(): the record is closed
            return {}
        return self._recorder.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed fit's checkpoint: the record goes on from there (loaded at the fit's start, on the
        model's device; refused there if it is another dataset's)."""
        self._fit.loaded = state_dict if "tracker" in state_dict else None

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
    if not (tracker.finished or tracker.epochs or csl._recorder.batches or csl._fit.loaded is not None):
        raise HarnessError("CSLCallback: no epoch was recorded in this process. Call scores() after fit(); a "
                           "fit launched in processes of its own (strategy='ddp_spawn' or 'ddp_notebook', "
                           "devices > 1 in a notebook), or by Ray Tune / Ray Train in their workers, records "
                           "there and its record does not come back: use strategy='ddp' (a script), or read "
                           "the scores inside the fit (on_train_end, rank 0)")
