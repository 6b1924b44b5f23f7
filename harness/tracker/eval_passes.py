"""The eval passes a user runs through `SampleTracker.eval_epoch`: the `eval_pass` recorder they
feed, which epochs they belong to, and the checks of their labels, all on the device until a pass
ends (one host read)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError
from harness.recorders import RecorderBank, RecorderRequest, RunContext, build_recorder
from harness.recorders.base import GrowingRows
from harness.recorders.eval_pass import eval_signals
from harness.rngs import global_rngs_kept
from harness.tracker.inputs import unusable_logits
from harness.tracker.selection import EVAL_ALL_KEY, EVAL_LAST_KEY


@dataclass
class EvalPassState:
    """What one eval pass counts on the device, read once when it ends: per sample, the batches
    whose signals were not finite; in all, labels outside the classes, labels other than the
    ones the samples were trained on, and device indices outside [0, n) (`bad_index`)."""

    flags: torch.Tensor  # int32 (N,)
    bad_labels: torch.Tensor  # int64 ()
    mismatched: torch.Tensor  # int64 ()
    made: bool = False  # the `eval_pass` recorder was made by this pass
    #: what the pass's start cleared (`EvalPasses.kept`), put back if the pass is refused
    kept: dict[str, Any] | None = None
    bad_index: torch.Tensor | None = None  # bool (): a device index outside [0, n) (`Inputs.eval_batches`)


@contextmanager
def training_untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run an eval pass in eval mode without changing the training it sits in: afterwards every
    submodule has the train/eval mode it had (a BatchNorm the user froze with `.eval()` inside a
    training model stays frozen; `model.train(was_training)` would unfreeze it), and the global
    RNGs -- torch's (CPU and the pass's CUDA device), numpy's and Python's -- are as before, so the
    next epoch's shuffle and dropout masks are the ones an untracked loop draws (iterating a
    DataLoader alone draws its base seed from torch's global generator)."""
    modes = [(module, module.training) for module in model.modules()]
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with global_rngs_kept(cuda):
            model.eval()
            yield
    finally:
        model.train(modes[0][1])  # a module's own train() override runs as it would in the user's loop
        for module, training in modes:
            module.training = training


def eval_label_error(bad_labels: int, mismatched: int, classes: int) -> HarnessError:
    """Why an eval pass was refused: its labels must be the class ids the model was trained on."""
    if bad_labels:
        what = (f"{bad_labels} label(s) outside [0, {classes}); labels must be class ids 0..C-1 of the model's "
                f"{classes} outputs")
    else:
        what = (f"{mismatched} sample(s) have a label other than the one they were trained on (update(labels=...) "
                f"or SampleTracker(labels=...)); final_loss, in_confidence and csl_eval are computed against the "
                f"training labels, so pass those")
    return HarnessError(f"eval_epoch(): {what} (the pass was not recorded)")


class EvalPasses:
    """The `eval_pass` recorder (made at the first pass, when C is known) is fed the passes the
    user runs: all of them when `keep_history`, else only the last. Its arrays are offered at
    `offer` under the keys the passes qualify for (a pass after the last epoch:
    eval_pass[epochs=last]; a pass after every epoch: eval_pass[epochs=all])."""

    def __init__(self, bank: RecorderBank, given: torch.Tensor, n: int, device: torch.device,
                 keep_history: bool) -> None:
        self.bank, self.given, self.n, self.device = bank, given, n, device
        self.keep_eval_history = keep_history
        self.key = EVAL_ALL_KEY if keep_history else EVAL_LAST_KEY
        self.at: list[int] = []  # epochs completed when each eval pass ran
        self.flags: list[torch.Tensor] = []  # per pass: int32 (N,) count of non-finite batches

    def start(self, epoch: int, classes: int) -> EvalPassState:
        """At a pass's first batch (after `epoch`, 0-based; -1: before training, not stored): the
        recorder clears the row it will write, kept first (`kept`) so that a refused pass changes
        nothing. Returns the pass's device counters."""
        made = self.key not in self.bank
        self.recorder(classes)
        kept = self.kept(epoch) if epoch >= 0 and not made else None
        if epoch >= 0:
            self.bank.on_eval_start(epoch)
        zero = torch.zeros((), dtype=torch.int64, device=self.device)
        return EvalPassState(torch.zeros(self.n, dtype=torch.int32, device=self.device), zero, zero.clone(), made,
                             kept)

    def kept(self, epoch: int) -> dict[str, Any]:
        """Copies of what a pass after `epoch` overwrites: its row of each signal (with the count of rows made)
        and the (N, C) probabilities, in host memory (one device-to-host copy a pass). A refused pass put
        nothing back, so an earlier pass of that row was lost (a repeated pass after the last epoch with the
        wrong labels left final_loss without its pass)."""
        rec = self.bank[self.key]
        row = epoch if self.keep_eval_history else 0
        kept: dict[str, Any] = {"row": row}
        for name, buf in rec.buffers.items():
            if isinstance(buf, GrowingRows):
                kept[name] = (len(buf.rows), buf.rows[row].clone() if row < len(buf.rows) else None)
            else:  # the (N, C) probabilities on the host: a second copy on the GPU (5 GB at ImageNet-1k) could OOM
                kept[name] = buf.to("cpu", copy=True)
        return kept

    def put_back(self, state: EvalPassState) -> None:
        """Undo a refused pass: the recorder it made is dropped, the rows it cleared are as they were."""
        if state.made:
            self.bank.recorders.pop(self.key, None)
            self.bank.meters.pop(self.key, None)
            return
        kept = state.kept
        if kept is None:
            return
        rec, row = self.bank[self.key], kept["row"]
        with torch.inference_mode(False):  # the caller's inference_mode: the buffers are normal tensors
            for name in [name for name in rec.buffers if name not in kept]:  # a signal first seen in this pass
                del rec.buffers[name]
            for name, buf in rec.buffers.items():
                if isinstance(buf, GrowingRows):
                    length, old = kept[name]
                    del buf.rows[length:]
                    if old is not None:
                        buf.rows[row].copy_(old)
                else:
                    buf.copy_(kept[name])

    def recorder(self, classes: int) -> None:
        """The `eval_pass` recorder, made at the first pass (or when a saved state is loaded)."""
        if self.key not in self.bank:
            ctx = RunContext(None, None, None, 0, self.device, samples=self.n, classes=classes)
            request = RecorderRequest.of("eval_pass", epochs="all" if self.keep_eval_history else "last")
            self.bank.add(self.key, build_recorder(request, ctx))

    def batch(self, epoch: int, idx: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                   state: EvalPassState) -> None:
        """One eval batch: labels outside the classes are counted and clamped (a CUDA kernel would
        fail on them beyond recovery), labels other than the recorded given ones counted; the
        pass is refused at its end (`end`) if there were any."""
        classes = logits.shape[-1]
        out_of_range = (labels < 0) | (labels >= classes)
        state.bad_labels += out_of_range.sum()
        labels = labels.clamp(0, classes - 1)
        known = self.given[idx]
        state.mismatched += ((known >= 0) & (known != labels) & ~out_of_range).sum()
        signals = eval_signals(logits, labels)
        if epoch >= 0:
            self.bank.on_eval_batch(epoch, idx, signals)
        bad = ~torch.isfinite(signals["loss"]) | unusable_logits(logits, labels)
        state.flags.index_add_(0, idx, bad.to(torch.int32))

    def end(self, epochs: int, state: EvalPassState, classes: int) -> None:
        """Count the pass as the eval pass after `epochs` epochs (one host read of its label
        checks). A pass before the first epoch (a baseline) is no epoch's pass: it is not
        counted, so csl_eval still sees one pass per epoch."""
        bad_index = state.bad_index if state.bad_index is not None else torch.zeros((), device=self.device)
        bad_labels, mismatched, outside = torch.stack([state.bad_labels, state.mismatched, bad_index.long()]).tolist()
        if outside:  # first: the labels of clamped indices were compared with another sample's
            self.put_back(state)
            raise HarnessError(f"eval_epoch(): sample indices outside [0, {self.n}) (the pass was not recorded); pass "
                               f"the dataset's own indices and n = len(dataset) (its final size, if it grows)")
        if bad_labels or mismatched:
            self.put_back(state)
            raise eval_label_error(bad_labels, mismatched, classes)
        if epochs == 0:
            return
        if self.at and self.at[-1] == epochs:  # a repeated pass replaces this epoch's
            self.at.pop()
            self.flags.pop()
        if not self.keep_eval_history:
            self.at.clear()
            self.flags.clear()
        self.at.append(epochs)
        self.flags.append(state.flags)

    def offer(self, arrays: dict, non_finite: dict[str, np.ndarray], missing: dict[str, np.ndarray],
              epochs: int) -> None:
        """Move the recorder's arrays (in `arrays`) to the keys the passes qualify for. `missing`:
        per key, the samples a pass left out (a loader with drop_last, over part of the set): their
        row stays NaN, which csl_eval's sum over passes would read as 0, so they must score NaN."""
        passes = arrays.pop(self.key, None)
        if not self.at:
            return
        flags = [f.cpu().numpy() > 0 for f in self.flags]
        absent = np.isnan(passes["loss"])  # a sample a pass covered has a finite loss, or a flag
        if self.at[-1] == epochs:  # the pass after the last epoch: its row and probabilities
            arrays[EVAL_LAST_KEY] = {k: v if k == "probs_last" else v[-1:].copy() for k, v in passes.items()}
            non_finite[EVAL_LAST_KEY] = flags[-1]
            missing[EVAL_LAST_KEY] = absent[-1] & ~flags[-1]
        if self.at == list(range(1, epochs + 1)):  # a pass after every epoch (history kept, or 1 epoch)
            arrays[EVAL_ALL_KEY] = passes
            non_finite[EVAL_ALL_KEY] = np.logical_or.reduce(flags)
            missing[EVAL_ALL_KEY] = absent.any(axis=0) & ~non_finite[EVAL_ALL_KEY]
