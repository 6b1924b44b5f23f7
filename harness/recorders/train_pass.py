"""Signals taken from the training pass itself: the logits and losses already exist for the
gradient step, so recording them is one scatter per batch (the "free" recorders).

The harness's training loop and `harness.tracker.SampleTracker` (a user's own loop) both record
through these recorders (in a `RecorderBank`), so signals and their storage cannot drift apart; a
user's loop has an open-ended epoch count, so there the (epochs, N) buffers grow a row per epoch.
"""

from __future__ import annotations

import torch

from harness.predictions import predicts_label
from harness.recorders.base import Recorder, RunContext, register_recorder


class PerEpochRecorder(Recorder):
    """One (epochs, N) buffer per signal; samples never presented in an epoch keep NaN."""

    signals: tuple[str, ...] = ()
    on_batches = True
    joins_batches = True  # every signal is per sample
    needs_logits = True  # a batch without logits (a user's loop passing losses only) is skipped
    #: called twice with the same arguments, `on_batch` leaves what one call leaves (it writes by
    #: index), so the FLOP counter gets an execution of its own (`harness.timing.Meter`); a subclass
    #: that carries state from call to call sets it False
    repeatable = True

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
        if logits is None and self.needs_logits:
            return
        for name, value in self.compute(logits, loss, labels).items():
            self.buffers[name][epoch].index_copy_(0, idx, value)


@register_recorder
class TrainLoss(PerEpochRecorder):
    name = "train_loss"
    description = "per-sample cross-entropy of the training pass, every epoch"
    signals = ("loss",)
    needs_logits = False

    @staticmethod
    def compute(logits, loss, labels):
        return {"loss": loss.float()}


class RunningLossSum(Recorder):
    """train_loss kept as a running sum: the per-sample float64 sum over epochs of the training-pass
    loss (a sample missing from an epoch adds 0), one (1, N) row under `loss`, O(N) memory for a
    user's loop over millions of samples (`SampleTracker(running_sums=True)`). Not registered: the
    harness's runs keep every epoch's row."""

    name = "train_loss"
    on_batches = True

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.buffer("loss", (1, ctx.n), dtype=torch.float64)
        self.epoch_row = torch.full((ctx.n,), float("nan"), device=ctx.device)  # the epoch in progress

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        self.epoch_row.index_copy_(0, idx, TrainLoss.compute(logits, loss, labels)["loss"])

    def on_epoch_end(self, epoch, phase, model) -> None:
        row = self.epoch_row
        self.buffers["loss"][0] += torch.where(torch.isnan(row), 0.0, row.double())
        row.fill_(float("nan"))


@register_recorder
class TrainCorrect(PerEpochRecorder):
    name = "train_correct"
    description = "whether the training-pass prediction equals the label, every epoch"
    signals = ("correct",)

    @staticmethod
    def compute(logits, loss, labels):
        return {"correct": predicts_label(logits, labels).float()}


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
