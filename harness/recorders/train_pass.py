"""Signals taken from the training pass itself: the logits and losses already exist for the
gradient step, so recording them is one scatter per batch (the "free" recorders).

Each recorder's `compute` is the one definition of its signals: the harness's training loop and
`harness.tracker.SampleTracker` (a user's own loop) both call it, so the two cannot drift apart.
"""

from __future__ import annotations

import torch

from harness.recorders.base import Recorder, RunContext, register_recorder


class PerEpochRecorder(Recorder):
    """One (epochs, N) buffer per signal; samples never presented in an epoch keep NaN."""

    signals: tuple[str, ...] = ()
    on_batches = True

    def __init__(self, ctx: RunContext, **params) -> None:
        super().__init__(ctx, **params)
        for s in self.signals:
            self.buffer(s, (ctx.epochs, ctx.n), fill=float("nan"))

    @staticmethod
    def compute(
        logits: torch.Tensor | None, loss: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Per-sample float32 signals of one batch, keyed like `signals`; logits may be half precision."""
        raise NotImplementedError

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        for name, value in self.compute(logits, loss, labels).items():
            self.buffers[name][epoch].index_copy_(0, idx, value)


@register_recorder
class TrainLoss(PerEpochRecorder):
    name = "train_loss"
    description = "per-sample cross-entropy of the training pass, every epoch"
    signals = ("loss",)

    @staticmethod
    def compute(logits, loss, labels):
        return {"loss": loss.float()}


@register_recorder
class TrainCorrect(PerEpochRecorder):
    name = "train_correct"
    description = "whether the training-pass prediction equals the label, every epoch"
    signals = ("correct",)

    @staticmethod
    def compute(logits, loss, labels):
        return {"correct": (logits.argmax(1) == labels).float()}


@register_recorder
class TrainMargin(PerEpochRecorder):
    name = "train_margin"
    description = "logit of the given label minus the largest other logit (AUM), every epoch"
    signals = ("margin",)

    @staticmethod
    def compute(logits, loss, labels):
        logits = logits.float()
        given = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        return {"margin": given - others}


@register_recorder
class TrainProb(PerEpochRecorder):
    name = "train_prob"
    description = "softmax probability of the given label and EL2N error norm, every epoch"
    signals = ("p_label", "el2n")

    @staticmethod
    def compute(logits, loss, labels):
        probs = torch.softmax(logits.float(), 1)
        p_label = probs.gather(1, labels[:, None]).squeeze(1)
        err = probs.scatter_add(1, labels[:, None], -torch.ones_like(p_label)[:, None])
        return {"p_label": p_label, "el2n": err.norm(dim=1)}
