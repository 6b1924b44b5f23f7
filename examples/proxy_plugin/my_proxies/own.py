"""Three proxies, one of each kind docs/extending.md describes: one computed from the per-epoch losses
every run records (free), one with a parameter, and one reading a recorder of its own that does
extra work after every training step (charged to it in the cost task).

The recorder is at the top level of this module, so the default executor's worker processes
import it. Its stored records are keyed by a digest of its class's code, so an edit of the class
records it again; an edit the digest cannot see (a module-level value it reads, a base class or
helper of yours it inherits or imports) bumps `version` (docs/extending.md)."""

from __future__ import annotations

import numpy as np
import torch

from harness.recorders import RecorderRequest
from harness.recorders.base import Recorder, RunContext, register_recorder
from proxies import Proxy, ScoreContext, register_proxy
from proxies.base import float64_record

TRAIN_LOSS = RecorderRequest.of("train_loss")
GRAD_NORM = RecorderRequest.of("logit_grad_norm")


@register_proxy
class LossAboveMedian(Proxy):
    name = "loss_above_median"
    description = "share of epochs whose training-pass loss is above that epoch's median loss"
    citation = "you, 2026"
    recorders = (TRAIN_LOSS,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        loss = float64_record(ctx.arrays(TRAIN_LOSS)["loss"])  # (epochs, N): a sample's loss each epoch
        return (loss > np.nanmedian(loss, axis=1, keepdims=True)).mean(axis=0)  # high: learned late or never


@register_proxy
class TopLoss(Proxy):
    name = "top_loss"
    description = "mean of a sample's k largest training-pass losses over the epochs"
    citation = "you, 2026"
    defaults = {"k": 2}
    recorders = (TRAIN_LOSS,)

    def validate(self) -> None:  # runs when the proxy is built, before anything trains
        self.check_int("k", 1)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        loss = float64_record(ctx.arrays(TRAIN_LOSS)["loss"])
        k = min(self.params["k"], loss.shape[0])
        return np.sort(loss, axis=0)[-k:].mean(axis=0)


@register_recorder
class LogitGradNorm(Recorder):
    """||softmax(logits) - onehot(label)||, the norm of the loss's gradient with respect to the
    logits, of every sample in every epoch's training pass."""

    name = "logit_grad_norm"
    description = "per-sample norm of the loss's gradient with respect to the logits, every epoch"
    version = 1            # bump when the same run would record other values
    on_batches = True      # on_batch after every training step
    joins_batches = True   # per-sample values only: the harness may hand it an epoch's batches joined
    repeatable = True      # two calls with the same arguments leave what one leaves (it writes by index)

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.buffer("norm", (ctx.epochs, ctx.n), fill=float("nan"))  # (epochs, N); NaN: not presented

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        grad = torch.softmax(logits.float(), dim=-1)
        grad[torch.arange(len(idx), device=grad.device), labels] -= 1.0
        self.buffers["norm"][epoch].index_copy_(0, idx, grad.norm(dim=-1))


@register_proxy
class GradNorm(Proxy):
    name = "grad_norm"
    description = "logit-gradient norm of the training pass, summed over epochs"
    citation = "you, 2026"
    recorders = (GRAD_NORM,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return float64_record(ctx.arrays(GRAD_NORM)["norm"]).sum(axis=0)
