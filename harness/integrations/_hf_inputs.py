"""`CSLTrainer`'s checks of the training data, once, when it is built: what a data-quality user is
likely to get wrong (a DatasetDict for a split, a label column the batch does not carry, string
labels, unlabeled rows, more classes than the model has outputs, a callback sized for another
dataset) failed inside the collator or in `cross_entropy` with a message that named none of it
(`Unable to create tensor ...`, `Target 2 is out of bounds`). Part of
`harness.integrations.transformers`.

Only what is surely wrong is refused, so the checks stand aside where the stored columns are not
what the batch gets (a `set_transform`, a collator of the user's own that may make or map the
labels), where the rows cannot be read without consuming them (a streaming `IterableDataset`), and
where `config.num_labels` does not size the model's outputs (a head of the user's own, multiple
choice); there the batch checks (`_hf_batch`) remain, as before these checks existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from harness.datasets.hf_labels import arrow_column
from harness.errors import HarnessError
from harness.integrations._common import WithIndex
from harness.integrations._hf_data import INDEX_KEY, IndexCollator

__all__ = ["check_train_dataset"]


def check_train_dataset(dataset: Any, n: int, label_names: Sequence[str] | None, model: Any,
                        collator: Any) -> None:
    """Refuses training data whose per-sample losses could not be computed, or not for its samples.

    `n` is the `CSLTrainerCallback`'s; `model` the trainer's (`_head_size`); `collator` the
    `data_collator` passed (None: the `Trainer`'s own). A collator of the user's own may make the
    labels itself, so a missing label column is then not refused; one not from transformers may
    also map them (strings to ids, ratings 1..5 to 0..4), so their values are then not checked.
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
    readable = hasattr(inner, "__len__")  # an IterableDataset's rows are read only by iterating it
    if readable and INDEX_KEY in columns:
        _check_index(_numpy(arrow_column(inner, INDEX_KEY)), n)
    if (getattr(inner, "format", None) or {}).get("type") == "custom":  # set_transform: rows are what it makes
        return
    wanted = [*(label_names or ()), "labels", "label"]
    column = next((c for c in wanted if c in columns), None)
    if column is None:
        if collator is not None:
            return
        raise HarnessError(f"CSLTrainer: train_dataset has no label column (looked for {wanted}; it has columns "
                           f"{columns}); name yours with TrainingArguments(label_names=[COLUMN])")
    if collator is not None and not _from_transformers(collator):
        return
    _check_labels(inner if readable else None, column, features[column], _head_size(model))


def _from_transformers(collator: Any) -> bool:
    """Whether `collator` is one of transformers' (padding, default), which pass the labels through."""
    collate = collator.collate if isinstance(collator, IndexCollator) else collator
    return str(getattr(collate, "__module__", "")).startswith("transformers.")


def _head_size(model: Any) -> int | None:
    """`config.num_labels` where it sizes the logits: a transformers `*For...Classification` model
    (not token classification), PEFT-wrapped or not. Elsewhere it is `PretrainedConfig`'s default 2
    whatever the outputs: a head of the user's own on a `PreTrainedModel` (10 classes on a
    `BertConfig()`, or a head replaced after loading), multiple choice (one output per choice); None
    there, not a refusal."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    kind = type(base)
    if not (kind.__module__.startswith("transformers.") and re.search(r"For(?!Token)\w*Classification", kind.__name__)):
        return None
    size = getattr(getattr(base, "config", None), "num_labels", None)
    heads = [m for m in base.modules() if isinstance(m, nn.Linear)]  # the head is built last
    if heads and heads[-1].out_features != size:  # replaced after loading: `model.classifier = nn.Linear(h, 10)`
        return None
    return size if isinstance(size, int) else None


def _numpy(values: Any) -> np.ndarray:
    """An Arrow integer array as numpy, a null (a row without a value) read as -1."""
    return np.asarray(values.fill_null(-1).to_numpy(zero_copy_only=False))


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
    """String labels (from the features); with a readable `dataset`, unlabeled rows (None or a
    negative id) and class ids beyond `num_labels`."""
    kind = str(getattr(feature, "dtype", ""))
    if "string" in kind:
        raise HarnessError(f"CSLTrainer: label column {column!r} holds strings, not class ids; encode them with "
                           f"dataset = dataset.class_encode_column({column!r}) (its ClassLabel names the classes: "
                           f"dataset.features[{column!r}].names)")
    if dataset is None or not re.fullmatch(r"u?int\d+", kind):  # floats, lists ...: the batch checks say so
        return
    values = arrow_column(dataset, column)
    if values.null_count:
        raise HarnessError(f"CSLTrainer: label column {column!r} has no label (None) in {values.null_count} row(s); "
                           f"unlabeled rows have no loss: drop them first, "
                           f"dataset.filter(lambda row: row[{column!r}] is not None)")
    y = _numpy(values)
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
