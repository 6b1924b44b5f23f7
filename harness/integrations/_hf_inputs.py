"""`CSLTrainer`'s checks of the training data, once, when it is built: what a data-quality user is
likely to get wrong (a DatasetDict for a split, a label column the batch does not carry, string
labels, unlabeled rows, more classes than the model has outputs, a callback sized for another
dataset) failed inside the collator or in `cross_entropy` with a message that named none of it
(`Unable to create tensor ...`, `Target 2 is out of bounds`). Part of
`harness.integrations.transformers`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.integrations._common import WithIndex
from harness.integrations._hf_data import INDEX_KEY

__all__ = ["check_train_dataset"]


def check_train_dataset(dataset: Any, n: int, label_names: Sequence[str] | None, num_labels: int | None,
                        own_collator: bool) -> None:
    """Refuses training data whose per-sample losses could not be computed, or not for its samples.

    `n` is the `CSLTrainerCallback`'s; `num_labels` the model's outputs (None: unknown); a collator of
    the user's own (`own_collator`) may make the labels itself, so a missing label column is then not refused.
    """
    inner = dataset.dataset if isinstance(dataset, WithIndex) else dataset
    if isinstance(inner, Mapping):  # a DatasetDict: with_sample_index numbered its splits, not its rows
        splits = list(inner)
        raise HarnessError(f"CSLTrainer: train_dataset is a DatasetDict of splits {splits}, not one split; pass "
                           f"the training split: train = with_sample_index(ds[{splits[0]!r}]) and "
                           f"CSLTrainerCallback(len(train))")
    if dataset is not None and hasattr(dataset, "__len__") and len(dataset) != n:
        raise HarnessError(f"CSLTrainer: the CSLTrainerCallback was made for {n} samples but train_dataset has "
                           f"{len(dataset)} rows; make it with CSLTrainerCallback(len(train_dataset))")
    features = getattr(inner, "features", None)
    columns = getattr(inner, "column_names", None)
    if features is None or not isinstance(columns, list):  # not a datasets.Dataset: the batch checks remain
        return
    if INDEX_KEY in columns:
        _check_index(np.asarray(inner.with_format("numpy")[INDEX_KEY]), n)
    wanted = [*(label_names or ()), "labels", "label"]
    column = next((c for c in wanted if c in columns), None)
    if column is None:
        if own_collator:
            return
        raise HarnessError(f"CSLTrainer: train_dataset has no label column (looked for {wanted}; it has columns "
                           f"{columns}); name yours with TrainingArguments(label_names=[COLUMN])")
    _check_labels(inner, column, features[column], num_labels)


def _check_index(index: np.ndarray, n: int) -> None:
    """The index column numbers the rows trained on 0..n-1, each once: one added before a `filter`
    (ids beyond the rows left) or on the parts of a `concatenate_datasets` (ids repeated, each with
    the labels of two samples) ties losses to the wrong samples."""
    if index.ndim == 1 and np.array_equal(np.sort(index), np.arange(n)):
        return
    repeated = int(len(index) - len(np.unique(index))) if index.ndim == 1 else 0
    raise HarnessError(f"CSLTrainer: the {INDEX_KEY!r} column does not number the {n} rows 0..{n - 1} once each "
                       f"(it runs from {int(index.min())} to {int(index.max())}, {repeated} id(s) repeated): add it "
                       f"last, after any filter, select or concatenate_datasets: train = with_sample_index(ds)")


def _check_labels(dataset: Any, column: str, feature: Any, num_labels: int | None) -> None:
    kind = str(getattr(feature, "dtype", ""))
    if "string" in kind:
        raise HarnessError(f"CSLTrainer: label column {column!r} holds strings, not class ids; encode them with "
                           f"dataset = dataset.class_encode_column({column!r}) (its ClassLabel names the classes: "
                           f"dataset.features[{column!r}].names)")
    if not re.fullmatch(r"u?int\d+", kind):  # floats, lists (one label per token), ...: the batch checks say so
        return
    y = np.asarray(dataset.with_format("numpy")[column])
    if y.ndim != 1 or not len(y):
        return
    if y.min() < 0:
        bad = np.flatnonzero(y < 0)
        raise HarnessError(f"CSLTrainer: label column {column!r} has class id {int(y.min())} in {len(bad)} row(s) "
                           f"(first: {bad[:5].tolist()}); unlabeled rows (-1, e.g. a GLUE test split) have no loss: "
                           f"drop them first, dataset.filter(lambda row: row[{column!r}] >= 0)")
    if num_labels is not None and y.max() >= num_labels:
        names = getattr(feature, "names", None)
        count = f"{len(names)} (its ClassLabel's names)" if names else f"at least {int(y.max()) + 1}"
        raise HarnessError(f"CSLTrainer: label column {column!r} holds class id {int(y.max())}, but the model has "
                           f"num_labels={num_labels} outputs; make the model with num_labels={count}")
