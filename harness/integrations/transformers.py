"""CSL (and the other training-pass proxies) from a Hugging Face `Trainer` run.

The `Trainer` computes one mean loss per batch inside `compute_loss` and tells callbacks nothing
about the batch, so the per-sample signals come from a small `Trainer` subclass:

    train = with_sample_index(train_dataset)           # a `sample_index` column (or WithIndex)
    csl = CSLTrainerCallback(len(train))
    trainer = CSLTrainer(model=model, args=args, train_dataset=train, callbacks=[csl], ...)
    trainer.train()
    csl.scores(); csl.suspects(20)

`CSLTrainer.compute_loss` takes the batch's `sample_index` out of the inputs, runs the model
without `labels`, computes the per-sample cross-entropy of its logits (what a sequence or image
classification head computes, with `reduction="none"`), hands losses, logits, labels and indices
to the callback in training mode, and returns their mean for the backward pass. The index travels
through the collator: `CSLTrainer` wraps whatever collator the `Trainer` would use (padding for
text included) in `IndexCollator`, which sets the index aside before collating and puts it back
as a (B,) tensor, and keeps the column, and the label columns (`labels`, `label`,
`args.label_names`), from the `Trainer`'s removal of unused columns. The
callback closes the tracker's epoch at each epoch's end. Under DDP the batch of every rank is
gathered first, as in the Lightning callback. Each checkpoint the `Trainer` saves gets the
tracker's state (`csl_tracker.pt`: a hyperparameter-search trial's checkpoints under its run folder
too, a checkpoint pushed to the Hub before the push), and `train(resume_from_checkpoint=...)` loads
it back, so a resumed run goes on with the epochs recorded before it. With `model_init`, every
`train()` (every search trial) trains a new model and so starts a new record.

What it does not do: label smoothing (`label_smoothing_factor`) and `compute_loss_func` are
replaced by plain cross-entropy (both refused); token-level tasks (one label per token) are not
per-sample losses and are refused. `pip install 'memprox[hf]'`.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.checkpoints import torch_save
from harness.errors import HarnessError
from harness.integrations._common import DistributedRecorder, OneTraining, WithIndex, concurrent_training
from harness.io import atomic_write
from harness.tracker import SampleTracker
from proxies import Proxy

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ImportError as exc:  # pragma: no cover
    raise ImportError("harness.integrations.transformers needs transformers: pip install 'memprox[hf]'") from exc

# after the guard above: these import transformers too, and a missing install must get its message
from harness.integrations._hf_accumulation import AccumulationCheck
from harness.integrations._hf_batch import batch_labels, batch_logits, batch_loss, per_sample_cross_entropy
from harness.integrations._hf_data import INDEX_KEY, IndexCollator, with_sample_index
from harness.integrations._hf_epochs import EpochMap
from harness.integrations._hf_inputs import check_train_dataset
from harness.integrations._hf_retry import RetryRecord

__all__ = ["INDEX_KEY", "STATE_FILE", "CSLTrainer", "CSLTrainerCallback", "IndexCollator", "WithIndex",
           "with_sample_index"]

#: The tracker's state in each checkpoint folder the `Trainer` saves.
STATE_FILE = "csl_tracker.pt"


_CONCURRENT = concurrent_training("CSLTrainer", "hyperparameter_search(backend='optuna', n_jobs>1) runs its trials in "
                                  "threads that share one Trainer and its callback: use n_jobs=1 (backend='ray' trains "
                                  "each trial in a process of its own); trainings of your own in threads need a "
                                  "CSLTrainer and CSLTrainerCallback each")


class _TrackerOptions(TypedDict):
    """`SampleTracker`'s arguments, kept to make a new tracker for each `train()` (`restart`)."""

    n: int
    proxies: Sequence[str | Proxy] | str | None
    labels: Sequence[int] | np.ndarray | torch.Tensor | None
    running_sums: bool
    suggest: bool | None


class CSLTrainerCallback(TrainerCallback):
    """Holds the `SampleTracker` a `CSLTrainer` records into and closes its epochs.

    Args:
        n: number of training samples (``len(train_dataset)``).
        proxies, labels, running_sums, suggest: as `SampleTracker` (default: every training-pass proxy
            and the suggested label; the trainer passes logits and labels).
    """

    def __init__(self, n: int, *, proxies: Sequence[str | Proxy] | str | None = None,
                 labels: Sequence[int] | np.ndarray | torch.Tensor | None = None, running_sums: bool = False,
                 suggest: bool | None = None) -> None:
        self._options: _TrackerOptions = {"n": n, "proxies": proxies, "labels": labels, "running_sums": running_sums,
                                          "suggest": suggest}
        self.tracker = SampleTracker(**self._options)
        self._recorder = DistributedRecorder(self.tracker)
        self._loaded: dict[str, Any] | None = None  # a checkpoint's state, until training begins
        self._folder: Path | None = None  # the checkpoint folder being saved (`CSLTrainer._save_checkpoint`)
        self._written: Path | None = None  # the folder the state was last written to
        self._stopped: str | None = None  # the exception that dropped the open epoch of the last train()
        self.one_training = OneTraining()  # CSLTrainer.train claims it: one training at a time records here
        self.epochs = EpochMap()  # the record's epoch of the Trainer's epoch in progress

    def restart(self) -> None:
        """A new, empty record: `CSLTrainer.train` with `model_init` trains a new model (each trial of
        `hyperparameter_search` too), whose losses must not add to those of the model before."""
        self.tracker = SampleTracker(**self._options)
        self._recorder = DistributedRecorder(self.tracker)
        self._loaded = self._stopped = None
        self.epochs = EpochMap()

    def record(self, indices: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor | None,
               labels: torch.Tensor | None) -> None:
        """One training batch (called by `CSLTrainer.compute_loss`); not one of an epoch the record
        closed, which the Trainer trains again after a resume in smaller batches (`EpochMap`)."""
        if self.epochs.retrained(self.tracker.epochs):
            return
        self._recorder.update(indices, losses=losses, logits=logits, labels=labels)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        retrained = self.epochs.retrained(self.tracker.epochs)
        self.epochs.epoch += 1
        if retrained:  # an epoch the record closed before: none of its batches was recorded
            return
        if self._recorder.batches == 0:
            raise HarnessError("CSLTrainerCallback: no batch of this epoch was recorded; train with CSLTrainer (its "
                               f"compute_loss records) on a dataset with a {INDEX_KEY!r} column (with_sample_index)")
        if control.should_training_stop and not float(state.epoch or 0).is_integer():
            # stopped mid-epoch (max_steps, early stopping): the epoch stays open, so that a checkpoint
            # saved now (save_strategy="epoch") resumes it rather than starting another; scores() closes it
            return
        self._recorder.end_epoch()

    def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None,
                       **kwargs: Any) -> None:
        """A checkpoint saved at an epoch's last step holds that epoch still open, and the resumed
        `Trainer` goes on with the next one (its `epoch` is whole): close it. A fresh `train()` after
        one that stopped mid-epoch closes that epoch too. Resumed in other batches than the
        checkpoint's, the `Trainer` goes on in another epoch (`EpochMap`)."""
        if self.tracker.finished and self._loaded is None:
            raise HarnessError("CSLTrainerCallback: scores() ended this callback's record; give this training a new "
                               "CSLTrainerCallback")
        # Accelerate's even_batches refills each rank's last batch with the epoch's first samples
        self._recorder.padding_batch = max(1, int(getattr(args, "per_device_train_batch_size", 1) or 1))
        epoch = math.floor((state.epoch or 0) + 1e-9)  # whole epochs done: the Trainer goes on with the next
        base = None  # the checkpoint's EpochMap.base (None in one saved before memprox kept it)
        if self._loaded is not None:  # CSLTrainer.train(resume_from_checkpoint=...) read it
            saved, self._loaded = self._loaded, None
            self._recorder.resume(saved, args.device, "CSLTrainerCallback", epoch)
            base, self.epochs.saved_batch = saved.get("base"), saved.get("batch")
        elif not state.global_step:
            self._end_open_epoch()  # a fresh train() after one that stopped mid-epoch
        self.epochs.begin(self._recorder, args, state, train_dataloader, epoch, base)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The checkpoint the `Trainer` just wrote gets the tracker's state (`CSLTrainer.train` reads it):
        in the folder `CSLTrainer` saved to (a hyperparameter-search trial's is `output_dir/run-...`)."""
        folder = self._folder or Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._folder = None
        # the Trainer's own rule for who writes a checkpoint: rank 0, or each node's local rank 0 under
        # save_on_each_node (no shared disk: each node resumes from its own copy); the ranks' records agree
        if args.should_save and folder != self._written:  # not written already, before a push
            self.save(folder)
        self._written = None

    def save(self, folder: Path) -> None:
        """Write the record so far into checkpoint `folder` (when it exists and the record is open)."""
        if folder.is_dir() and not self.tracker.finished:
            saved = {**self._recorder.state(), "base": self.epochs.base, "batch": self.epochs.batch}
            atomic_write(folder / STATE_FILE, lambda path: torch_save(saved, path))  # a full disk names the file
            self._written = folder

    def load(self, checkpoint: str | Path) -> None:
        """Resume the record from a checkpoint folder's `csl_tracker.pt`; warns when it has none."""
        path = Path(checkpoint) / STATE_FILE
        if not Path(checkpoint).is_dir():  # no checkpoint at all: the Trainer says so itself, and resumes nothing
            return
        _warn_model_only(Path(checkpoint))
        if not path.is_file():
            warnings.warn(f"CSLTrainer: {checkpoint} holds no {STATE_FILE} (saved without CSLTrainerCallback, or by "
                          f"an older memprox); csl will sum the epochs from the resumed step on only",
                          RuntimeWarning, stacklevel=3)
            return
        self._loaded = torch.load(path, map_location="cpu", weights_only=True)

    def scores(self, proxies: Sequence[str | Proxy] | str | None = None) -> pd.DataFrame:
        """`SampleTracker.scores`: one row per sample, one column per proxy (higher = more suspicious)."""
        self._close_open_epoch()
        return self.tracker.scores(proxies)

    def suspects(self, k: int = 20, by: str | Proxy = "csl", classes: Sequence[str] | None = None) -> pd.DataFrame:
        """`SampleTracker.suspects`: the k highest-scoring samples with given, predicted and suggested label."""
        self._close_open_epoch()
        return self.tracker.suspects(k, by, classes)

    def plot_suspects(self, images: Any, k: int = 16, **kwargs: Any) -> Any:
        """`SampleTracker.plot_suspects` (image datasets)."""
        self._close_open_epoch()
        return self.tracker.plot_suspects(images, k, **kwargs)

    def _close_open_epoch(self) -> None:
        """Before results: an epoch stopped mid-way is closed; a record with no epoch says why."""
        tracker = self.tracker
        if not (tracker.finished or tracker.epochs or self._recorder.batches):
            if self._stopped:  # a search whose last trial was pruned in its first epoch, an interrupted run
                raise HarnessError(f"CSLTrainerCallback: no epoch was recorded: the last train() stopped by "
                                   f"{self._stopped} before its first epoch ended, and its batches were dropped (a "
                                   f"pruned hyperparameter_search trial, an interrupted run); train at least one "
                                   f"whole epoch (the chosen trial again, after a search) for scores")
            raise HarnessError("CSLTrainerCallback: no epoch was recorded in this process. Call scores() after "
                               "train(); hyperparameter_search(backend='ray') trains each trial in a Ray worker "
                               "process with a copy of this callback, whose record comes back only in the "
                               f"checkpoints the trial reports to Ray ({STATE_FILE}: load its 'tracker' entry into "
                               "a SampleTracker): else train the chosen trial again with CSLTrainer (its "
                               "hyperparameters) for its scores")
        self._end_open_epoch()

    def drop_open_epoch(self, exc: BaseException) -> None:
        """`train()` raised mid-epoch: keep whole epochs only (`DistributedRecorder.drop_open_epoch`)."""
        self._stopped = type(exc).__name__  # the last train()'s, also one that failed before its first batch
        self.epochs.kept = None  # a retry's that did not begin
        self._recorder.drop_open_epoch(f"CSLTrainer: training stopped by {type(exc).__name__}")

    def _end_open_epoch(self) -> None:
        if self._recorder.batches and not self.tracker.finished:
            self._recorder.end_epoch()


def _warn_model_only(folder: Path) -> None:
    """A checkpoint saved with `save_only_model=True` holds the weights alone: the `Trainer` resumes
    from it with a new optimizer, schedule and random state (it says so at info level only), so the
    resumed training, and the losses csl sums from there, are not the uninterrupted run's. The
    optimizer's state is a file or folder named `optimizer*` (`*optim_states*` under DeepSpeed ZeRO;
    DeepSpeed's stage 0 keeps it in its model states, so its `latest` or `global_step*` counts)."""
    names = [p.name for p in (*folder.glob("*"), *folder.glob("*/*"))]
    deepspeed = any(n == "latest" or n.startswith("global_step") for n in names)  # stage 0 keeps it in its model states
    if not deepspeed and not any(n.startswith("optimizer") or "optim_states" in n for n in names):
        warnings.warn(f"CSLTrainer: {folder} holds no optimizer state (saved with save_only_model=True?): the Trainer "
                      f"resumes its weights with a new optimizer, learning-rate schedule and random state, so the "
                      f"training from there, and the scores, differ from an uninterrupted run's; for equal scores, "
                      f"checkpoint with save_only_model=False", RuntimeWarning, stacklevel=4)


class CSLTrainer(Trainer):
    """A `Trainer` whose loss is per-sample cross-entropy, recorded into the `CSLTrainerCallback`
    among its callbacks. Everything else (optimizer, schedule, DDP, mixed precision) is the
    `Trainer`'s. Gradient accumulation: the returned loss is the batch mean, which the `Trainer`
    divides by the accumulation steps -- which the plain `Trainer` does not do for a model whose
    forward takes `**kwargs` (most Hugging Face models): a RuntimeWarning says so, at construction and at
    each `train()` with another accumulation (a search trial's, `AccumulationCheck`)."""

    index_key = INDEX_KEY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # before Trainer's own checks: with a plain nn.Module, label smoothing failed there first, on `model.config`
        given = inspect.signature(Trainer.__init__).bind_partial(self, *args, **kwargs).arguments
        if getattr(given.get("args"), "label_smoothing_factor", 0) or given.get("compute_loss_func") is not None:
            raise HarnessError("CSLTrainer computes plain per-sample cross-entropy: drop label_smoothing_factor and "
                               "compute_loss_func (CSL sums the loss the model is trained on)")
        super().__init__(*args, **kwargs)
        found = [cb for cb in self.callback_handler.callbacks if isinstance(cb, CSLTrainerCallback)]
        if len(found) != 1:
            raise HarnessError(f"CSLTrainer needs exactly one CSLTrainerCallback in callbacks=[...], got {len(found)}")
        if len(self.args.label_names or ()) > 1:
            raise HarnessError(f"CSLTrainer scores one label per sample; args.label_names = {self.args.label_names}")
        self.csl = found[0]
        check_train_dataset(self.train_dataset, self.csl.tracker.n, self.args.label_names, self.model,
                            given.get("data_collator"))
        self.data_collator = IndexCollator(self.data_collator, self.index_key)
        if not self.label_names:  # a plain nn.Module (no label argument): evaluation must still see the labels
            self.label_names = ["labels"]
        self.accumulation_check = AccumulationCheck(self.model_accepts_loss_kwargs)
        self.accumulation_check.check(self.args, stacklevel=2)  # said at the user's CSLTrainer(...) already
        self.add_callback(self.accumulation_check)  # and again where each train()'s args are final (a trial's)
        self.retry_record = RetryRecord(self.csl)  # after the CSLTrainerCallback, whose record it keeps
        self.add_callback(self.retry_record)
        self.model_accepts_loss_kwargs = False  # our loss is a batch mean: the Trainer scales it for accumulation
        self.loss_is_scaled_for_ga = False

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.train`; resuming from a checkpoint also resumes the tracker's record from it. With
        `model_init` every call trains a new model (every `hyperparameter_search` trial does), so it
        starts a new record (the checkpoint's, when resuming): scores() are then the last call's. A
        call while another thread trains with the same callback is refused (`OneTraining`)."""
        self.csl.one_training.claim(_CONCURRENT)
        self.retry_record.checkpoint_batch = None  # this train()'s checkpoint's, read at its first attempt
        try:
            if self.model_init is not None:
                self.csl.restart()
            checkpoint = resume_from_checkpoint
            if checkpoint is True:
                checkpoint = get_last_checkpoint(self.args.output_dir)
            if checkpoint:
                self.csl.load(checkpoint)
            try:
                return super().train(resume_from_checkpoint, *args, **kwargs)
            except BaseException as exc:  # mid-epoch: no half epoch summed as a whole one by scores()
                self.csl.drop_open_epoch(exc)
                raise
        finally:
            self.csl.one_training.release()

    def _inner_training_loop(self, batch_size: int | None = None, *args: Any, **kwargs: Any) -> Any:
        """`Trainer._inner_training_loop`; a retry after running out of memory starts from the failed
        attempt's record (`auto_find_batch_size`, `RetryRecord`)."""
        self.retry_record.begun, self.retry_record.batch_size = False, batch_size
        try:
            return super()._inner_training_loop(batch_size, *args, **kwargs)
        except Exception as exc:
            self.retry_record.failed(self.args, exc)
            raise

    def _save_checkpoint(self, model: nn.Module, trial: Any, *args: Any, **kwargs: Any) -> None:
        """`Trainer._save_checkpoint`, telling the callback the folder: a hyperparameter-search trial
        saves under its own run folder (`Trainer._get_output_dir`), not `output_dir`."""
        self.csl._folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        super()._save_checkpoint(model, trial, *args, **kwargs)

    def _tune_save_checkpoint(self, checkpoint_dir: str) -> None:
        """`Trainer._tune_save_checkpoint`: the checkpoint a Ray Tune trial reports, from which Ray
        restores a failed trial or, under population-based training, copies a trial into another,
        gets the tracker's state too (else the restored trial's csl would sum only the later epochs)."""
        super()._tune_save_checkpoint(checkpoint_dir)
        if self.args.should_save:
            self.csl.save(Path(checkpoint_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    def _push_from_checkpoint(self, checkpoint_folder: str, *args: Any, **kwargs: Any) -> None:
        """The tracker's state joins the checkpoint before `push_to_hub` uploads it (the `Trainer`
        pushes before it calls `on_save`, where the state is otherwise written)."""
        if self.args.should_save:
            self.csl.save(Path(checkpoint_folder))
        super()._push_from_checkpoint(checkpoint_folder, *args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the index and the labels through `remove_unused_columns`: `compute_loss` reads both
        itself, and a plain `nn.Module` whose forward takes no `labels` would otherwise lose them."""
        super()._set_signature_columns_if_needed()
        columns = cast("list[str]", self._signature_columns)  # typed None by the Trainer: the call above filled it
        for column in (self.index_key, "labels", "label", *(self.args.label_names or ())):
            if column not in columns:
                columns.append(column)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        indices = inputs.pop(self.index_key, None)
        labels = batch_labels(inputs, self.args.label_names)
        outputs = model(**inputs)
        logits = batch_logits(outputs)
        losses = per_sample_cross_entropy(logits, labels, training=model.training)
        if model.training:
            if indices is None:
                raise HarnessError(f"CSLTrainer: the training batch has no {self.index_key!r}; give the dataset the "
                                   f"column with with_sample_index(train_dataset)")
            self.csl.record(indices, losses, logits, labels)
        loss = batch_loss(losses, labels, training=model.training)
        if not return_outputs:
            return loss
        if isinstance(outputs, Mapping):
            outputs = outputs if isinstance(outputs, dict) else dict(outputs)
        else:  # the Trainer reads a non-dict output as (loss, logits, ...), what a model given labels returns
            outputs = (loss, *outputs) if isinstance(outputs, (tuple, list)) else (loss, logits)
        return loss, outputs

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        """`Trainer.prediction_step` without the sample index (a batch without labels goes to the model as is)."""
        inputs = {k: v for k, v in inputs.items() if k != self.index_key}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
