"""A separate eval-mode pass over the training set at epoch checkpoints (no augmentation).

`epochs="last"` runs it once, at the final checkpoint (final loss, in-confidence, held-out
probabilities); `epochs="all"` runs it after every epoch (the released code's CSL variant). The two
are kept apart even on one run, at the price of one duplicated pass at the end, so that each proxy
is charged exactly the passes it needs.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.predictions import predicts_label
from harness.recorders.base import Recorder, RunContext, eval_batches, register_recorder

#: The per-sample arrays every pass keeps, allocated up front in this order (the probabilities only at the
#: last pass); any other signal `eval_signals` returns gets a buffer at its first batch.
SIGNALS = ("loss", "correct", "p_label", "p_max", "phi")


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """phi = log p_y - log(1 - p_y), LiRA's logit-scaled confidence (Carlini et al. 2022), as
    logit_y - logsumexp of the other logits: computed from p_y it saturates once p_y rounds to 1
    (float32: a margin of ~17 nats), from the logits it stays exact for any margin."""
    picked = labels[..., None]
    others = logits.scatter(-1, picked, float("-inf"))
    return logits.gather(-1, picked).squeeze(-1) - torch.logsumexp(others, -1)


def eval_signals(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample eval signals from logits (..., C) and labels (...): loss, correct, p_label,
    p_max, phi (logit-scaled confidence, for the privacy task) and the probabilities; any
    leading shape, so batched ensembles (K, B, C) share it."""
    logits = logits.float()
    probs = torch.softmax(logits, -1)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return {
        "loss": loss.reshape(labels.shape),
        "correct": predicts_label(logits, labels).float(),
        "p_label": probs.gather(-1, labels[..., None]).squeeze(-1),
        "p_max": probs.amax(-1),
        "phi": logit_confidence(logits, labels),
        "probs": probs,
    }


@register_recorder
class EvalPass(Recorder):
    """The eval pass's signals, (rows, N) each, and the last pass's (N, C) probabilities.

    In `train_run` the recorder runs the pass itself (`on_epoch_end`); the batched ensemble and a
    user's loop run it elsewhere and feed the signals (`on_eval_batch`, after `on_eval_start`).
    With an open-ended epoch count (a user's loop) every fed pass is taken for the last so far.
    """

    name = "eval_pass"
    description = "eval-mode loss, correctness and label probability on every training sample"
    takes_eval = True
    #: called twice with the same arguments, a call leaves what one call leaves, so the FLOP counter
    #: gets an execution of its own (`harness.timing.Meter`)
    repeatable = True

    def __init__(self, ctx: RunContext, epochs: str = "last") -> None:
        super().__init__(ctx, epochs=epochs)
        self.every_epoch = epochs == "all"
        self.rows = ctx.epochs if self.every_epoch else 1
        for s in SIGNALS:
            self.buffer(s, (self.rows, ctx.n), fill=float("nan"))
        self.buffer("probs_last", (ctx.n, ctx.num_classes), fill=float("nan"))
        self.all_idx = torch.arange(ctx.n, device=ctx.device)

    def active(self, epoch: int, phase: int) -> bool:
        if self.ctx.data is None:  # no training set to pass over: fed by on_eval_batch
            return False
        return phase == 1 and (self.every_epoch or self._last(epoch))

    def _last(self, epoch: int) -> bool:
        return self.ctx.epochs is None or epoch == self.ctx.epochs - 1

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        data = self.ctx.data
        assert data is not None and model is not None  # `active` only with a training set: a harness run's
        y = data.y
        for idx, logits in eval_batches(model, data, self.all_idx, self.ctx.eval_batch_size):
            self.on_eval_batch(epoch, idx, eval_signals(logits, y[idx]))

    def _probs_last(self) -> torch.Tensor:
        probs = self.buffers["probs_last"]
        assert isinstance(probs, torch.Tensor)  # (N, C): its first dimension is never open-ended
        return probs

    def on_eval_start(self, epoch: int) -> None:
        """A fed pass replaces what an earlier pass wrote into its row (and the probabilities)."""
        row = epoch if self.every_epoch else 0
        for name, buffer in self.buffers.items():
            if name != "probs_last":
                buffer[row].fill_(float("nan"))
        if self._last(epoch):
            self._probs_last().fill_(float("nan"))

    def on_eval_batch(self, epoch: int, idx: torch.Tensor, signals: dict[str, torch.Tensor]) -> None:
        """Stores every signal it is given (a signal added to `eval_signals` gets a buffer of its
        own at its first batch), `probs` as `probs_last`."""
        row = epoch if self.every_epoch else 0
        last = self._last(epoch)
        for name, values in signals.items():
            if name == "probs":
                if last:
                    self._probs_last().index_copy_(0, idx, values)
                continue
            if name not in self.buffers:
                self.buffer(name, (self.rows, self.ctx.n), fill=float("nan"))
            self.buffers[name][row].index_copy_(0, idx, values.float())
