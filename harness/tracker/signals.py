"""A tracker's recording state on the device: its `RecorderBank` (where the signals are stored, by
the harness's own recorders), the given and predicted labels, and the non-finite bookkeeping that
turns a diverged sample's scores into NaN."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from harness.recorders import RecorderBank, RecorderRequest, Records, RunContext, build_recorder
from harness.recorders.train_pass import RunningLossSum
from harness.tracker.selection import EVAL_ALL_KEY, EVAL_LAST_KEY, TRAIN_KEYS


class TrackedSignals:
    """Everything one tracker records, allocated on the device of the first tensor it sees.

    The bank's context is open-ended (no epoch count, no data): per-epoch recorders grow a row per
    epoch, and the `eval_pass` recorder (made at the first eval pass, when C is known) is fed the
    passes the user runs: all of them when `keep_eval_history`, else only the last. Its arrays
    are offered at `to_host` under the keys the passes qualify for (a pass after the last epoch:
    eval_pass[epochs=last]; a pass after every epoch: eval_pass[epochs=all]).
    """

    def __init__(self, n: int, device: torch.device, train_keys: tuple[str, ...], running_sums: bool,
                 keep_eval_history: bool, fixed_labels: np.ndarray | None) -> None:
        self.n, self.device = n, device
        self.ctx = RunContext(None, None, None, 0, device, samples=n)
        self.bank = RecorderBank(self.ctx, timed=False)
        if running_sums:
            self.bank.add("train_loss", RunningLossSum(self.ctx))
        else:
            for key in train_keys:
                self.bank.add(key, build_recorder(RecorderRequest.of(key), self.ctx))
        self.keep_eval_history = keep_eval_history
        self.eval_key = EVAL_ALL_KEY if keep_eval_history else EVAL_LAST_KEY
        self.eval_at: list[int] = []  # epochs completed when each eval pass ran
        self.eval_flags: list[torch.Tensor] = []  # per pass: int32 (N,) count of non-finite batches
        given = fixed_labels if fixed_labels is not None else np.full(n, -1)
        self.given = torch.as_tensor(given, dtype=torch.int64).to(device)
        self.keep_labels = fixed_labels is None  # labels come from update()
        self.pred = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.non_finite_now = torch.zeros(n, dtype=torch.int32, device=device)  # this epoch's, per sample
        self.non_finite_train = torch.zeros(n, dtype=torch.bool, device=device)  # any epoch's

    # -- training batches and epochs ---------------------------------------------------------------
    def record_batch(self, epoch: int, idx: torch.Tensor, losses: torch.Tensor | None, logits: torch.Tensor | None,
                     labels: torch.Tensor | None, flag_logits: bool) -> None:
        """One batch to the bank (without logits: train_loss only), the labels, and the count of
        samples whose loss (or logits, when `flag_logits`) are not finite: no host sync."""
        loss = losses.float() if losses is not None else nn.functional.cross_entropy(
            logits.float(), labels, reduction="none")
        if logits is not None:
            self.pred.index_copy_(0, idx, logits.argmax(1))
        self.bank.on_batch(epoch, idx, logits, loss, labels)
        if labels is not None and self.keep_labels:
            self.given.index_copy_(0, idx, labels)
        bad = ~torch.isfinite(loss)
        if flag_logits:
            bad |= ~torch.isfinite(logits).all(1)
        self.non_finite_now.index_add_(0, idx, bad.to(torch.int32))

    def close_epoch(self, epoch: int) -> None:
        self.bank.on_epoch_end(epoch, 1, None)  # the running sum folds the epoch in

    def close_non_finite_epoch(self, epoch_number: int) -> None:
        """Fold this epoch's non-finite samples into the record (their scores become NaN) and warn
        at the first epoch that has any, so a loop that keeps going is told at once."""
        now = self.non_finite_now > 0
        if not bool(self.non_finite_train.any()):
            samples = torch.nonzero(now).flatten().tolist()
            warnings.warn(
                f"SampleTracker: non-finite loss or logits (NaN or inf) for {len(samples)} sample(s) in epoch "
                f"{epoch_number} (first: {samples[:10]}); they will score NaN in the proxies that read the "
                f"training pass. Lower the learning rate, or check these samples' inputs and labels",
                RuntimeWarning,
                stacklevel=3,
            )
        self.non_finite_train |= now
        self.non_finite_now.zero_()

    # -- eval passes ---------------------------------------------------------------------------
    def start_eval_pass(self, epoch: int, classes: int) -> torch.Tensor:
        """At a pass's first batch (after `epoch`, 0-based; -1: before training, not stored): the
        recorder clears the row it will write. Returns the pass's non-finite counts."""
        if self.eval_key not in self.bank:
            ctx = RunContext(None, None, None, 0, self.device, samples=self.n, classes=classes)
            request = RecorderRequest.of("eval_pass", epochs="all" if self.keep_eval_history else "last")
            self.bank.add(self.eval_key, build_recorder(request, ctx))
        if epoch >= 0:
            self.bank.on_eval_start(epoch)
        return torch.zeros(self.n, dtype=torch.int32, device=self.device)

    def eval_batch(self, epoch: int, idx: torch.Tensor, signals: dict[str, torch.Tensor], logits: torch.Tensor,
                   flags: torch.Tensor) -> None:
        if epoch >= 0:
            self.bank.on_eval_batch(epoch, idx, signals)
        bad = ~torch.isfinite(signals["loss"]) | ~torch.isfinite(logits).all(-1)
        flags.index_add_(0, idx, bad.to(torch.int32))

    def end_eval_pass(self, epochs: int, flags: torch.Tensor) -> None:
        if self.eval_at and self.eval_at[-1] == epochs:  # a repeated pass replaces this epoch's
            self.eval_at.pop()
            self.eval_flags.pop()
        if not self.keep_eval_history:
            self.eval_at.clear()
            self.eval_flags.clear()
        self.eval_at.append(epochs)
        self.eval_flags.append(flags)

    # -- results -------------------------------------------------------------------------------
    def to_host(self, epochs: int) -> tuple[Records, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(records by key, non-finite flags by key, given labels, predicted labels) on the host."""
        arrays = self.bank.arrays(rows=epochs)
        train_flags = self.non_finite_train.cpu().numpy()
        non_finite = {key: train_flags for key in TRAIN_KEYS}
        passes = arrays.pop(self.eval_key, None)  # offered below under the keys the passes qualify for
        if self.eval_at:
            flags = [f.cpu().numpy() > 0 for f in self.eval_flags]
            if self.eval_at[-1] == epochs:  # the pass after the last epoch: its row and probabilities
                arrays[EVAL_LAST_KEY] = {k: v if k == "probs_last" else v[-1:].copy() for k, v in passes.items()}
                non_finite[EVAL_LAST_KEY] = flags[-1]
            if self.eval_at == list(range(1, epochs + 1)):  # a pass after every epoch (history kept, or 1 epoch)
                arrays[EVAL_ALL_KEY] = passes
                non_finite[EVAL_ALL_KEY] = np.logical_or.reduce(flags)
        pred = self.pred.cpu().numpy()
        if EVAL_LAST_KEY in arrays:  # the final model's eval-mode prediction beats the last batches'
            probs = arrays[EVAL_LAST_KEY]["probs_last"]
            pred = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs, nan=0.0).argmax(1))
        return Records(arrays), non_finite, self.given.cpu().numpy(), pred
