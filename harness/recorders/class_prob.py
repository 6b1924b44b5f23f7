"""The class the training pass believed in: per sample, the softmax over every class summed over
the epochs of the training pass, for the suspects task's suggested label.

A memorised mislabeled sample ends with the final model predicting its (wrong) given label, so the
final prediction suggests nothing. Before it is memorised the model predicts what the sample looks
like; the probabilities summed over the whole pass keep that. They cost one softmax and one scatter
per batch on logits the gradient step already made, and an (N, C) sum (not (epochs, N, C)).
"""

from __future__ import annotations

import numpy as np
import torch

from harness.recorders.base import Recorder, RunContext, register_recorder

#: The suspects task reads this recorder by this name.
NAME = "train_class_prob"


@register_recorder
class TrainClassProb(Recorder):
    """`prob_sum` (N, C): each sample's training-pass softmax summed over the epochs it was presented
    in; `seen` (N,): how many presentations that sum holds. Their ratio is the mean softmax.
    A running sum: called twice, it adds twice, so it is not `repeatable`."""

    name = NAME
    description = "per-sample softmax over every class, summed over the training pass's epochs"
    on_batches = True
    joins_batches = True  # a sum of per-sample values: joined batches add what each batch adds
    needs_logits = True  # a batch without logits (a user's loop passing losses only) is skipped

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        # loaded in place on resume (`load_arrays` copies into them), so these stay the buffers
        self.prob_sum: torch.Tensor = self.buffer("prob_sum", (ctx.n, ctx.num_classes))
        self.seen: torch.Tensor = self.buffer("seen", (ctx.n,))

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        if logits is None:
            return
        probs = torch.softmax(logits.float(), 1)
        self.prob_sum.index_add_(0, idx, probs)
        self.seen.index_add_(0, idx, torch.ones_like(probs[:, 0]))


def mean_probs(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The (N, C) mean training-pass softmax from the recorder's arrays; NaN rows for samples the
    pass never presented (they are in no training batch)."""
    seen = np.asarray(arrays["seen"], dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, np.asarray(arrays["prob_sum"], dtype=np.float64) / seen, np.nan)
