"""The label column of an `hf:` dataset as class ids, apart from `harness.datasets.hf` so the loader
keeps to options, splits and inputs. Labels follow `npz:`'s rules (ids 0..C-1, every class in
training, at least 2), and a test split saved apart is renumbered by its ClassLabel names, so a
class missing from one split cannot shift the other's ids and score test accuracy on the wrong
classes. Each refusal names the column and the `datasets` call that fixes it."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from harness.datasets.npz import _npz_classes
from harness.errors import HarnessError

__all__ = ["arrow_column", "class_ids", "class_names", "label_column", "test_class_ids"]


def label_column(name: str, given: str | None, train: Any) -> str:
    """The column `label=` names, else `label`, else `labels`."""
    cols = train.column_names
    if given is not None:
        if given not in cols:
            raise HarnessError(f"{name}: no label column {given!r}; the dataset has columns {cols} "
                               f"(set label=COLUMN)")
        return given
    for guess in ("label", "labels"):
        if guess in cols:
            return guess
    raise HarnessError(f"{name}: no label column (looked for 'label' and 'labels'); the dataset has columns {cols}; "
                       f"set label=COLUMN")


def arrow_column(dataset: Any, column: str) -> Any:
    """One column of a `datasets.Dataset` as an Arrow array, in the dataset's row order (after a
    shuffle or select too), in a constant number of Python calls: `with_format("numpy")[column]`
    converts datasets 4's lazy `Column` row by row (~200-400 calls a row, minutes on a million rows).
    The `hf:` loader and `CSLTrainer`'s checks both read labels so."""
    return dataset.select_columns([column]).with_format("arrow")[:].column(0)


def class_ids(name: str, split: Any, column: str, split_name: str) -> np.ndarray:
    """Integer class ids 0..C-1 (a ClassLabel or an integer Value column); anything else says how to fix it."""
    import datasets

    feature = split.features[column]
    kind = feature.dtype if isinstance(feature, datasets.Value) else None
    if isinstance(feature, datasets.ClassLabel) or (kind is not None and re.fullmatch(r"u?int\d+", kind)):
        y = np.asarray(arrow_column(split, column).to_numpy(zero_copy_only=False))
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise HarnessError(f"{name}: label column {column!r} ({split_name}) must hold one integer per row, got "
                               f"{y.dtype} {y.shape}")
        if len(y) and y.min() < 0:
            bad = np.flatnonzero(y < 0)
            raise HarnessError(f"{name}: label column {column!r} ({split_name}) has negative class id {int(y.min())} "
                               f"in {len(bad)} row(s) (first: {bad[:5].tolist()}); unlabeled rows (-1, e.g. a GLUE "
                               f"test split) cannot be trained or scored: drop them, or pick test=NAME / test=none")
        return y.astype(np.int64)
    if kind is not None and "float" in kind:
        fix = (f"cast it: dataset.cast_column({column!r}, datasets.Value('int64')) when the floats are whole "
               f"class ids, or dataset.class_encode_column({column!r}) for arbitrary values")
        raise HarnessError(f"{name}: label column {column!r} holds {kind}, not class ids; {fix}")
    if kind is not None and "string" in kind:
        raise HarnessError(f"{name}: label column {column!r} holds strings, not class ids; encode them with "
                           f"dataset.class_encode_column({column!r}) before save_to_disk")
    raise HarnessError(f"{name}: label column {column!r} is {feature!r}; it must be a ClassLabel or integer class "
                       f"ids (set label=COLUMN to pick another column)")


def test_class_ids(name: str, train: Any, test: Any, column: str) -> np.ndarray:
    """The test split's class ids in the training split's numbering, mapped by ClassLabel name: splits saved
    apart may name their ids otherwise (a class missing from one), and test accuracy used the wrong classes."""
    import datasets

    y, ours, theirs = class_ids(name, test, column, "test"), train.features[column], test.features[column]
    if not isinstance(ours, datasets.ClassLabel) or not isinstance(theirs, datasets.ClassLabel) or ours == theirs:
        return y
    unknown = sorted({theirs.names[i] for i in np.unique(y)} - set(ours.names))
    if unknown:
        raise HarnessError(f"{name}: the test split's labels {unknown[:5]} are not classes of the training split "
                           f"({ours.names[:10]}); drop those rows, or pick test=NAME / test=none")
    return np.array([ours.names.index(c) if c in ours.names else -1 for c in theirs.names], dtype=np.int64)[y]


def class_names(name: str, train: Any, column: str, y: np.ndarray, y_test: np.ndarray) -> list[str]:
    """ClassLabel names, else 0..max(y) checked as npz: does (every class present, at least 2)."""
    import datasets

    feature = train.features[column]
    names = np.asarray(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    fix = (f"re-encode column {column!r} with ids 0..C-1 of the classes that occur (a ClassLabel naming only "
           f"those), or filter the dataset" if names is not None else f"encode column {column!r} (e.g. ratings 1..5) "
           f"as ids 0..C-1 of the values that occur: dataset.class_encode_column({column!r}) before save_to_disk")
    return _npz_classes(name, names, y, y_test, fix)
