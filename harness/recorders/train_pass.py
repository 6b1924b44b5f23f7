"""Signals taken from the training pass itself: the logits and losses already exist for the
gradient step, so recording them is one scatter per batch (the "free" recorders)."""

from __future__ import annotations

import torch

from harness.recorders.base import Recorder, RunContext, register_recorder


class _PerEpochRecorder(Recorder):
    """One (epochs, N) buffer per signal; samples never presented in an epoch keep NaN."""

    signals: tuple[str, ...] = ()
    on_batches = True

    def __init__(self, ctx: RunContext, **params) -> None:
        super().__init__(ctx, **params)
        for s in self.signals:
            self.buffer(s, (ctx.epochs, ctx.n), fill=float("nan"))


@register_recorder
class TrainLoss(_PerEpochRecorder):
    name = "train_loss"
    description = "per-sample cross-entropy of the training pass, every epoch"
    signals = ("loss",)

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        self.buffers["loss"][epoch].index_copy_(0, idx, loss.float())


@register_recorder
class TrainCorrect(_PerEpochRecorder):
    name = "train_correct"
    description = "whether the training-pass prediction equals the label, every epoch"
    signals = ("correct",)

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        self.buffers["correct"][epoch].index_copy_(0, idx, (logits.argmax(1) == labels).float())


@register_recorder
class TrainMargin(_PerEpochRecorder):
    name = "train_margin"
    description = "logit of the given label minus the largest other logit (AUM), every epoch"
    signals = ("margin",)

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        given = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        self.buffers["margin"][epoch].index_copy_(0, idx, (given - others).float())


@register_recorder
class TrainProb(_PerEpochRecorder):
    name = "train_prob"
    description = "softmax probability of the given label and EL2N error norm, every epoch"
    signals = ("p_label", "el2n")

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        probs = torch.softmax(logits.float(), 1)
        p_label = probs.gather(1, labels[:, None]).squeeze(1)
        err = probs.scatter_add(1, labels[:, None], -torch.ones_like(p_label)[:, None])
        self.buffers["p_label"][epoch].index_copy_(0, idx, p_label)
        self.buffers["el2n"][epoch].index_copy_(0, idx, err.norm(dim=1))
