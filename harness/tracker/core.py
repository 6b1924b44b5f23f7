"""`SampleTracker`, the public face of `harness.tracker`: argument checks and the call order of a
user's loop here; inputs in `inputs`, batches held for recording in `batch_log`, recording state in
`signals`, proxy choice in `selection`, the eval pass in `evaluation`, results in `results`,
checkpoints in `checkpoints` (the API) and `state` (the saved state); the attributes all of them
share are declared in `fields`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from harness.errors import HarnessError
from harness.tracker.batch_log import Batch, BatchLog
from harness.tracker.checkpoints import TrackerCheckpoints, warn_unknown_closed
from harness.tracker.class_probs import ClassProbSums, why_not_recorded
from harness.tracker.evaluation import TrackerEvaluation
from harness.tracker.gather import gather_batch
from harness.tracker.inputs import Inputs, check_labels, label_array, not_a_tensor
from harness.tracker.refusals import unchanged_if_refused
from harness.tracker.results import TrackerResults
from harness.tracker.selection import LOSS_KEY, ProxySelection
from harness.tracker.signals import TrackedSignals, warn_other_loss
from harness.tracker.state import restore_signals
from proxies import Proxy


class SampleTracker(TrackerEvaluation, TrackerCheckpoints, TrackerResults):
    """Per-sample training signals of a user-written loop, scored by memprox's proxies.

    Args:
        n: number of samples in the training set; indices passed to `update` are in [0, n).
        proxies: proxies to compute (names, `"name(k=v)"` variants, a comma-separated string of
            them, "all" for every proxy the tracker can compute, or Proxy objects). Default: every
            proxy the data you pass allows -- the training-pass proxies (csl, forgetting,
            threshold_lt, aum, el2n, variability) when `update` gets logits and labels, csl alone
            when it gets only losses, plus csl_eval / final_loss / in_confidence after `eval_epoch`.
            Naming them records only the signals they need (less memory, less work per batch).
        labels: the given label of every sample (optional; otherwise taken from `update`). One
            source of truth: `update(labels=...)` may then be left out, and must give the same
            labels when passed (else `end_epoch` raises); `eval_epoch` must use them too. Without
            them, `update` must give a sample the same label every time (else `end_epoch` raises).
        running_sums: keep only a running per-sample loss sum: O(N) memory for N in the millions,
            but then csl is the only proxy available.
        suggest: record each sample's training-pass softmax summed over epochs, for the suggested
            label of `suspects()` (the suspects task's rule: of the classes other than the given one,
            the highest mean probability). None (default): when `update()` gets logits, unless
            `running_sums` or the sums pass 1 GiB (N x C above 2^27, said once); True: at any size;
            False: never.

    Memory, on the device of the first batch's tensors: one float32 (N,) row per signal per epoch (made
    at the epoch's first batch), i.e. O(N x epochs) -- loss (csl), correct (forgetting, threshold_lt),
    margin (aum), p_label and el2n (el2n, variability), so 5 x 4 bytes x N x epochs for the default set
    (N = 50,000 and 200 epochs: 200 MB) -- plus two int64 (N,) rows (given and predicted label; a third, the
    given labels as of the last end_epoch(), without constructor labels), a bool
    and an int32 (N,) host array for the epoch's presentations (plus an int32 and an int64 device row
    once indices come on a GPU), an int32 row counting label conflicts, and for `eval_epoch` one float32
    (N,) row per eval signal (loss, correct, p_label, p_max, phi) per epoch and the last pass's (N, C)
    probabilities (only the last call's rows when the selected proxies do not include csl_eval); while a
    pass runs, a copy of the row it replaces and of those probabilities, so that a refused pass leaves the
    earlier one (`harness.tracker.refusals`: a refused call changes nothing).
    `running_sums=True`: one float64 and one float32 (N,) row. The suggested label (`suggest`): two
    float32 (N, C) sums and two (N,) counts (the closed epochs' and the open one's). Batches are held
    and recorded together (at `end_epoch`, or every 65,536 samples; `harness.tracker.batch_log`), so a
    batch costs a few copies: a log of at most 1.3 MiB of indices, losses and labels plus 2^20 logit
    values (4 MiB in float32), on the device. Call `update()` and `end_epoch()` on one CUDA stream: the
    log is written by the one and read by the other. Nothing is copied to the host before `scores()`;
    per batch there is no host sync (index checks of CUDA tensors are collected on the device and raised
    at `end_epoch`; CUDA labels are read once per recording of the held batches, before any loss of
    them). Inputs in half precision (AMP) are cast to float32, integer labels of any width to int64.

    One presentation per sample and epoch: when a sampler with replacement (or a repeated index)
    shows a sample again within an epoch, its first presentation of the epoch is kept and the
    later ones are dropped -- the rule of the DDP integrations, whose `DistributedSampler` pads an
    epoch with repeats -- and `end_epoch` warns once (RuntimeWarning) naming the samples.

    Non-finite values: a sample whose loss or logits are NaN or +inf in some batch, or whose
    label's logit is -inf (a diverged sample, an overflow that a GradScaler skipped), scores NaN in
    every proxy that reads that signal (a -inf logit of another class is a class mask: recorded)
    -- never the 0 or the partial sum that the proxies' "not presented" rule would give, which
    would rank a diverged sample least suspicious. The samples are counted on the device (one int32
    and one bool (N,) row, one int32 row per eval pass), read at `end_epoch` together with the index
    check, reported by a RuntimeWarning at the first such epoch and again by `scores()`. The loop is
    yours, so the tracker does not stop it; `warnings.simplefilter("error", RuntimeWarning)` does.

    The loop stays yours: `update()` draws no random numbers and `eval_epoch()` restores every
    submodule's mode and the global RNGs, so a tracked loop trains bitwise as the untracked one.
    A loop that raised mid-epoch calls `discard_epoch()` before rerunning the epoch or scoring.

    Checkpoints (`harness.tracker.checkpoints.TrackerCheckpoints`): `state_dict()` holds everything
    recorded so far, the epoch in progress included; `load_state_dict(state)` resumes it in a new
    tracker made with the same arguments, so an interrupted run scores as an uninterrupted one.
    """

    def __init__(
        self,
        n: int,
        *,
        proxies: Sequence[str | Proxy] | str | None = None,
        labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        running_sums: bool = False,
        suggest: bool | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise HarnessError(f"SampleTracker(n=...) must be the number of training samples (>= 1), got {n!r}")
        self.n = int(n)
        self.running_sums = running_sums
        if suggest is not None and not isinstance(suggest, bool):  # 0 would pass for False, and act as None
            raise HarnessError(f"SampleTracker(suggest=...) must be None (by size), True or False, got {suggest!r}")
        self._suggest = suggest
        self._class_probs = None  # the suggested label's sums, made at the first recorded batch with logits
        self._no_suggestion = None  # why there are none (decided at the first recorded batch); "": nothing to say
        self.epochs = 0
        self.num_classes = None
        self._selection = ProxySelection(proxies, running_sums)
        self._fixed_labels = None if labels is None else label_array(labels, self.n)
        self._fixed_top = -1 if self._fixed_labels is None else int(self._fixed_labels.max())  # n >= 1
        self._device = None  # the device state (these four) is made by _ensure_device
        self._inputs = None
        self._signals = None
        self._log = None  # the epoch's batches not yet recorded
        self._replay = None  # a copy's (`copy`): the copied tracker's, on the host until the log is made
        self._pending = False  # update() called since the last end_epoch()
        self._finished = False
        self._all_batches_had_logits = True
        self._had_logits_closed = True  # as of the last end_epoch(): what discard_epoch() goes back to
        self._closed_logits_unknown = False  # resumed from a state without it (`harness.tracker.state`)
        self._eval_at = []  # epochs completed when each eval pass ran (kept after finish)
        #: presentations beyond each sample's first an epoch may have without a warning (`allowed_repeats`): the
        #: user's, or world size - 1 (the most a `DistributedSampler` adds to pad the epoch) set by update(gather=True)
        self._allowed_repeats = 0
        self._resumed_allowance = 0  # a loaded state's, for the epoch it holds open (`TrackerCheckpoints`)
        self._warned_repeats = False
        self._warned_other_loss = False  # losses= other than the cross-entropy of the logits: said once
        self._host = None
        self._saved = None  # a loaded state, written to the device at its first use

    # -- recording ---------------------------------------------------------------------------
    def update(
        self,
        indices: torch.Tensor | np.ndarray | Sequence[int],
        *,
        losses: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        gather: bool = False,
    ) -> None:
        """Record one training batch: sample indices and per-sample losses (`reduction="none"`),
        and/or logits (B, C) with labels (B,); the loss is computed from logits when not given.
        Tensors may require grad (they are detached) and be half precision.

        `gather=True` (DDP, Accelerate): first gather the batch from every process, in rank order
        (`harness.tracker.gather`; every rank calls it, a rank without samples with empty tensors;
        batches of unequal size are fine), so every rank records the same global batch; and let
        `allowed_repeats` cover a `DistributedSampler`'s padding (world size - 1 extra presentations). With one process,
        or no process group, the batch is recorded as given."""
        self._check_open("update")
        world = 1
        if gather:
            indices, losses, logits, labels, world = gather_batch(indices, losses=losses, logits=logits,
                                                                  labels=labels)
        if losses is None and logits is None:
            raise HarnessError("update() needs losses= (per-sample, reduction='none') or logits= and labels=")
        for what, value in (("logits", logits), ("losses", losses)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise HarnessError(not_a_tensor(what, value))
        ref = logits if logits is not None else losses
        assert isinstance(ref, torch.Tensor)  # one of them, checked above
        # a refused batch changes nothing: the call that corrects it must not be refused for it
        # (a first one made the buffers: a later load_state_dict was refused, a fix on a GPU was off-device)
        with unchanged_if_refused(self):
            self._ensure_device(ref.device, "update()")
            inputs, selection, log = self._inputs, self._selection, self._log
            assert inputs is not None and log is not None  # made by _ensure_device
            host, idx = inputs.batch_indices(indices)
            if host is not None:
                b = len(host)
            else:
                assert idx is not None  # the indices are on the host or on the device
                b = idx.shape[0]
            if logits is not None:
                logits = inputs.tensor("logits", logits, ndim=2, length=b, floating=True)
                self._check_classes(logits.shape[1], "update(): logits have {} classes but earlier batches had {}")
            if labels is not None:
                labels = inputs.tensor("labels", labels, ndim=1, length=b, floating=False)
                inputs.check_host_labels(labels, self.num_classes)  # with losses= alone too: -100 is a loss of 0
            elif logits is not None:
                self._check_fixed_labels()
            if losses is not None:
                losses = inputs.tensor("losses", losses, ndim=1, length=b, floating=True)
            if logits is None and selection.logit_keys and selection.selected is not None:
                raise HarnessError(
                    f"update(): the selected proxies need {selection.logit_keys}, computed from logits= and labels=; "
                    "pass them too, or select proxies=['csl'] for losses alone"
                )
        # set once the batch is accepted: a refused call changes nothing (`refusals`), this attribute included
        self._allow_repeats(world - 1)
        if not self._pending:  # a new epoch: this run's sampler, not the resumed state's (`allowed_repeats`)
            self._resumed_allowance = 0
        if logits is None and b:  # an empty batch leaves no sample without logits
            self._all_batches_had_logits = False
        # logits are checked for non-finite values when logit signals are recorded from them
        flag_logits = logits is not None and selection.train_keys != (LOSS_KEY,)
        batch = Batch(host, idx, losses, logits, labels, flag_logits)
        with _writable():
            if not log.add(batch):  # the log holds another kind, or is full
                self._flush()
                if not log.add(batch):  # larger than the log: recorded as it is
                    self._record(batch)
        assert self._signals is not None  # made by _ensure_device
        self._signals.presentations.batches.add(b)  # the log records batches merged: their sizes are counted here
        self._pending = True

    def end_epoch(self) -> None:
        """Close the epoch in progress: one device-to-host read of the deferred checks (indices,
        labels against the constructor's, non-finite signals, repeated presentations)."""
        self._check_open("end_epoch")
        if not self._pending:
            raise HarnessError("end_epoch() without update() since the previous epoch; "
                               "call update() for every batch and end_epoch() once per epoch")
        self._restore_now("end_epoch()")
        self._flush()
        signals, inputs = self._signals, self._inputs
        assert signals is not None and inputs is not None  # an update() made them, or _restore_now did
        bad_index, non_finite, repeated, extra, conflicts, other_loss = signals.epoch_checks(inputs.bad)
        if bad_index:  # only CUDA indices get here: on the CPU update() raised at once
            raise HarnessError(f"update() got sample indices outside [0, {self.n}) in epoch {self.epochs + 1}; pass "
                               f"the dataset's own indices and n = len(dataset) (its final size, if it grows)")
        if conflicts:
            raise signals.label_conflict_error(conflicts, self.epochs + 1)
        if non_finite:
            signals.close_non_finite_epoch(self.epochs + 1)
        allowed = self.allowed_repeats  # extra presentations, not samples: the padding's bound (ddp31)
        if extra > allowed and not self._warned_repeats:
            self._warned_repeats = True
            signals.presentations.warn(repeated, self.epochs + 1, extra, allowed)
        if other_loss and not self._warned_other_loss:
            self._warned_other_loss = True
            warn_other_loss(other_loss, self.epochs + 1)  # losses= of label smoothing, class weights, ...
        signals.close_epoch(self.epochs)
        if self._class_probs is not None:
            self._class_probs.close_epoch()
        self.epochs += 1
        self._pending = False
        self._had_logits_closed = self._all_batches_had_logits

    def discard_epoch(self) -> None:
        """Drop the epoch in progress -- every `update()` since the last `end_epoch()` -- when the
        loop raised mid-epoch: rerun the epoch, or score the epochs closed before it. Closing it
        with `end_epoch()` instead would count a half epoch (csl sums it), and rerunning it without
        this would keep the failed attempt's losses (each sample's first presentation)."""
        self._check_open("discard_epoch")
        if not self._pending:
            return
        self._restore_now("discard_epoch()")
        if self._log is not None:
            self._log.clear()
        signals, inputs = self._signals, self._inputs
        assert signals is not None and inputs is not None  # an update() made them, or _restore_now did
        signals.discard_epoch(self.epochs)
        if self._class_probs is not None:
            self._class_probs.discard_epoch()
        if self.epochs == 0:  # the first batch decides on the suggested label's sums: decided again
            self._class_probs = self._no_suggestion = None
        inputs.bad.zero_()
        self._all_batches_had_logits = self._had_logits_closed
        warn_unknown_closed(self)
        self._pending = False

    # -- helpers -----------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self._finished:
            raise HarnessError(f"{what}() after the tracker finished (scores()/suspects()/finish() was called); "
                               "create a new SampleTracker for another run. To look at scores during training, "
                               "score a copy and go on with the tracker: tracker.copy().scores()")

    def _flush(self) -> None:
        """Record the batches the log holds (`harness.tracker.batch_log`). The log is emptied once
        they are recorded: a failure keeps them, and every later flush fails alike, loudly."""
        log = self._log
        held = log.held() if log is not None else None
        if log is not None and held is not None:
            with _writable():
                self._record(held)
            log.clear()

    def _record(self, batch: Batch) -> None:
        inputs, signals = self._inputs, self._signals
        assert inputs is not None and signals is not None  # made by _ensure_device
        if batch.host is None:
            assert batch.idx is not None  # a batch's indices are on the host or on the device
            idx = inputs.on_device(batch.idx)
        else:
            idx = torch.from_numpy(batch.host).to(self._device, non_blocking=True)
        labels = batch.labels
        if labels is not None:  # device labels are read here first, before a loss is computed from them
            check_labels(labels, self.num_classes)
        elif batch.logits is not None:
            labels = signals.given[idx]  # the constructor's, range-checked by `_check_fixed_labels`
        slot = signals.record_batch(self.epochs, idx, batch.losses, batch.logits, labels, batch.flag_logits,
                                    batch.host)
        if self._class_probs is None and self._no_suggestion is None:  # the first batch decides
            classes = None if batch.logits is None else int(batch.logits.shape[1])
            self._no_suggestion = why_not_recorded(self._suggest, self.running_sums, self.n, classes)
            if self._no_suggestion is None and classes is not None and self._device is not None:
                self._class_probs = ClassProbSums(self.n, classes, self._device)
        if self._class_probs is not None and batch.logits is not None:
            self._class_probs.on_batch(slot, batch.logits)

    def _check_fixed_labels(self) -> None:
        """Logits without labels= read the constructor's labels, all of which must be classes of the
        logits: checked once for all samples, since the batches are recorded later (`batch_log`)."""
        if self._fixed_labels is None:
            raise HarnessError("update(): logits= needs labels= (or SampleTracker(labels=...) at construction)")
        top = self.num_classes
        assert top is not None  # update() set it from the logits before this check
        if self._fixed_top >= top:
            sample = int(self._fixed_labels.argmax())
            label = int(self._fixed_labels[sample])
            raise HarnessError(f"update(): SampleTracker(labels=...) gives sample {sample} label {label}, outside "
                               f"the logits' classes [0, {top}); labels must be class ids 0..C-1")

    def _check_classes(self, classes: int, message: str) -> None:
        if self.num_classes is None:
            self.num_classes = classes
        elif classes != self.num_classes:
            raise HarnessError(message.format(classes, self.num_classes))

    def _ensure_device(self, device: torch.device, where: str) -> None:
        if self._device is None:  # set only once the buffers are made: a failure here leaves no half a tracker
            # as a tensor's: a loaded state's "cpu:0" (HF's args.device) or "cuda" equals no tensor's device
            device = torch.empty(0, device=device).device
            with torch.inference_mode(False):  # a first eval_epoch under inference_mode: buffers stay writable
                inputs = Inputs(self.n, device)
                signals = TrackedSignals(self.n, device, self._selection.train_keys, self.running_sums,
                                         self._selection.keep_eval_history, self._fixed_labels)
                probs = None
                if self._saved is not None:
                    saved = self._saved["signals"]
                    restore_signals(signals, inputs.bad, saved, self.num_classes, self._eval_at)
                    if self._no_suggestion is None and saved.get("class_probs") is not None:
                        probs = ClassProbSums.restored(saved["class_probs"], self.n, self.num_classes, device)
            self._device, self._inputs, self._signals, self._saved = device, inputs, signals, None
            self._class_probs = probs
            self._log = BatchLog(device)
            if self._replay is not None:  # held by the tracker this one copies: held here alike
                with _writable():
                    added = self._log.add(self._replay.to(device))
                assert added  # at most what one log held
                self._replay = None
        elif device != self._device:
            raise HarnessError(f"{where}: tensors are on {device} but earlier ones were on {self._device}; "
                               "keep the model and the tracked tensors on one device")


def _writable() -> AbstractContextManager[object]:
    """Out of the caller's `torch.inference_mode`, if on: rows and buffers made or written under it
    would refuse every later write outside it."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext()
