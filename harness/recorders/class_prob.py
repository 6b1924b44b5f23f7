"""The class the training pass believed in: per sample, the softmax over every class summed over
the epochs of the training pass, for the suspects task's suggested label.

A memorised mislabeled sample ends with the final model predicting its (wrong) given label, so the
final prediction suggests nothing. Before it is memorised the model predicts what the sample looks
like; the probabilities summed over the whole pass keep that. They cost one softmax and one scatter
per batch on logits the gradient step already made, and an (N, C) sum (not (epochs, N, C)).

The suggested label (`suggested_columns`) answers "if the given label is wrong, what is it?": of
the classes other than the given one, the class of the highest mean softmax. Whether the label is
wrong is the proxies' rank; the suggestion is never the given label. The rule is here, beside the
sums it reads, so the suspects task and the tracker (`harness.tracker.class_probs`) share it without
the tracker importing the task's modules. Why this rule, not the final prediction nor the highest
mean with the given label allowed, and how often it names the true class (digits and CIFAR-10, three
seeds, `benchmarks/measure_suggested_label.py`): docs/tasks-and-metrics.md, "The suggested label".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.recorders.base import Recorder, RecorderRequest, RunContext, register_recorder

#: The suspects task reads this recorder by this name.
NAME = "train_class_prob"
#: The request for it: the suggested label's source (the suspects task's and the tracker's).
SUGGEST = RecorderRequest.of(NAME)
#: The columns the suggested label adds to a suspects table, in order.
SUGGESTED_COLUMNS = ("suggested", "suggested_name", "p_suggested")


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


def suggested_columns(probs: np.ndarray, labels: np.ndarray, names: np.ndarray) -> dict[str, Any]:
    """`suggested` (of the classes other than the given `labels`, the one of the highest mean
    training-pass softmax; the first on a tie), its `suggested_name` and that mean probability
    `p_suggested`, from the (N, C) mean softmax. A sample the pass never presented (a NaN row) gets
    empty cells, not class 0."""
    valid = ~np.isnan(probs).any(axis=1)
    others = np.nan_to_num(probs, nan=-1.0)
    others[np.arange(len(others)), labels] = -np.inf  # the given label is what is in doubt
    best = others.argmax(axis=1)
    suggested = pd.array(best, dtype="Int64")
    suggested[~valid] = pd.NA
    return {"suggested": suggested,
            "suggested_name": np.where(valid, names[best], None),
            "p_suggested": np.where(valid, probs[np.arange(len(probs)), best], np.nan)}


def insert_suggested(table: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, names: np.ndarray,
                     after: str) -> None:
    """The suggested columns of the mean softmax `probs` (a row per row of `table`, whose given
    labels are `labels`) into `table`, right after its column `after` if it has one, else at the end:
    the suspects CSV puts them after `p_label`, the tracker's `suspects()` after `predicted`."""
    at = list(table.columns).index(after) + 1 if after in table else len(table.columns)
    for offset, (column, values) in enumerate(suggested_columns(probs, labels, names).items()):
        table.insert(at + offset, column, values)
