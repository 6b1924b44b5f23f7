"""`SampleTracker.eval_epoch`: the eval-mode pass over the training set that csl_eval, final_loss
and in_confidence read. Its own module because the pass is a job apart from recording the training
batches (`core`): it runs the model, and must leave the user's training as it found it
(`eval_passes.training_untouched`) and record nothing of a pass that failed part-way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from harness.errors import HarnessError
from harness.tracker.eval_passes import EvalPassState, training_untouched
from harness.tracker.fields import TrackerFields
from harness.tracker.refusals import unchanged_if_refused


class TrackerEvaluation(TrackerFields):
    """`SampleTracker`'s eval pass (its state lives in the tracker, see `SampleTracker`)."""

    @torch.no_grad()
    def eval_epoch(
        self,
        model: nn.Module,
        data: tuple[torch.Tensor, torch.Tensor] | Iterable[Sequence[torch.Tensor]],
        *,
        batch_size: int = 1024,
    ) -> None:
        """An eval-mode pass over the training set after an epoch, for csl_eval (call it after
        every epoch), final_loss and in_confidence (after the last one).

        `data` is either `(x, y)` tensors holding all n samples in index order, or an iterable of
        `(x, y, index)` batches (a DataLoader over the `WithIndex` wrapper, without augmentation)
        covering every sample: one a pass leaves out scores NaN in the proxies reading that pass.
        `y` must be the labels the model is trained on: labels other than the recorded ones (from
        `update` or the constructor), or outside the classes, fail the pass (one host read at its
        end) and it is not recorded (an earlier pass after the same epoch stays). Wrap the call in
        `torch.autocast(...)` for a half-precision pass, or in `torch.inference_mode()`. A pass before
        the first `end_epoch()` (a baseline) is allowed and recorded nowhere: csl_eval still wants one
        pass after every epoch.
        The pass leaves the training as it was: each submodule's train/eval mode, and the global
        RNGs (torch, numpy, random) that a loader or the model drew from during the pass.
        """
        self._check_open("eval_epoch")
        if self.running_sums:
            raise HarnessError("eval_epoch(): running_sums=True keeps only the loss sum that csl needs; "
                               "use SampleTracker(running_sums=False) for csl_eval, final_loss, in_confidence")
        if self._pending:
            raise HarnessError("eval_epoch() runs between epochs: call end_epoch() first")
        param = next(iter(model.parameters()), None)
        with unchanged_if_refused(self):  # a refused first pass makes no buffers; a refused pass keeps the earlier
            self._pass(model, data, batch_size, param.device if param is not None else torch.device("cpu"))

    def _pass(self, model: nn.Module, data: Any, batch_size: int, on: torch.device) -> None:
        """The pass on `on` (the model's device); one that fails records nothing and puts back what its start
        cleared."""
        self._ensure_device(on, "eval_epoch()")
        signals, inputs, device = self._signals, self._inputs, self._device
        assert signals is not None and inputs is not None and device is not None  # made by _ensure_device
        state: EvalPassState | None = None
        classes = 0
        epoch = self.epochs - 1  # the recorder's row: the epoch just closed (-1: a baseline pass)
        bad = torch.zeros((), dtype=torch.bool, device=device)  # the pass's device indices outside [0, n)
        try:
            with training_untouched(model, device):  # modes and global RNGs as they were
                for idx, x, y in inputs.eval_batches(data, batch_size, bad):
                    logits = model(x)
                    classes = self._eval_classes(logits, len(idx))
                    with torch.inference_mode(False):  # the buffers outlive a caller's inference_mode
                        if state is None:
                            state = signals.evals.start(epoch, classes)
                        signals.evals.batch(epoch, idx, logits, y, state)
        except BaseException:
            if state is not None:  # the row was cleared and partly rewritten: put back as it was
                signals.evals.put_back(state)
            raise
        if state is None:
            raise HarnessError("eval_epoch(): data yielded no batches")
        state.bad_index = bad
        signals.evals.end(self.epochs, state, classes)
        # one list: what scores() and state_dict() read (a resumed tracker's were two lists, so its state after a
        # refused pass did not load)
        self._eval_at = signals.evals.at

    def _eval_classes(self, logits: Any, batch: int) -> int:
        """The classes of an eval batch's logits, which must be (batch, C) like the training ones."""
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            hint = ""
            if not isinstance(logits, torch.Tensor):  # a dict, a ModelOutput, (logits, aux): a module of its own
                hint = ("; pass a module that returns them, e.g. nn.Sequential(model, Pick()) with Pick's forward "
                        "returning out['logits'] (a dict or ModelOutput) or out[0] (a tuple)")
            raise HarnessError(f"eval_epoch(): the model returned {got} for a batch of {batch}; it must return "
                               f"logits ({batch}, classes){hint}")
        self._check_classes(logits.shape[1], "eval_epoch(): the model gives {} classes, training batches had {}")
        return logits.shape[1]
