"""The class names of a tracker's suspects table (`SampleTracker.suspects(classes=...)`): checked
once, then written beside each class id as the suspects task's CSV writes them (`label_name` after
`label`, `predicted_name` after `predicted`; `suggested_name` comes with the suggested label), so
a user's loop reads the CLI's columns instead of joining the names by hand.

Its own module because a bad list must fail at once in one line that names the fix: a string
(split into letters), repeated names (two classes that read the same) or names that are not text
(the labels passed by mistake) would otherwise put wrong names in the table without a sign."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError

FIX = "pass one name (a str) per class, in class-id order"


def checked_classes(classes: Any, call: str) -> list[str] | None:
    """`classes` as a list of distinct strings (None stays None); `call` names the argument's owner
    in the error (`suspects`, `plot_suspects`, `CSLCallback`)."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes, Mapping)) or not isinstance(classes, Iterable):
        raise HarnessError(f"{call}(classes=...) must be a list of class names, got {type(classes).__name__} "
                           f"{classes!r:.60}; {FIX}")
    names = list(classes)
    for position, name in enumerate(names):
        if not isinstance(name, str):
            raise HarnessError(f"{call}(classes=...) holds {name!r} ({type(name).__name__}) at position {position}, "
                               f"not a class name; {FIX}")
    first: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in first:
            raise HarnessError(f"{call}(classes=...) names two classes {name!r} (positions {first[name]} and "
                               f"{position}); give every class a distinct name")
        first[name] = position
    return [str(name) for name in names]  # np.str_ as plain str


def check_class_count(names: list[str], ids: Iterable[np.ndarray], num_classes: int | None, call: str) -> None:
    """`names` must name every class: each id in `ids` (given and predicted labels, -1: none) and,
    when logits were recorded, exactly the model's `num_classes` outputs."""
    top = max((int(a.max()) for a in ids if len(a)), default=-1)
    needed = max(num_classes or 0, top + 1)
    if len(names) < needed:
        what = "captions need" if call == "plot_suspects" else "table needs"
        raise HarnessError(f"{call}(classes=...) names {len(names)} class(es) but the {what} class ids "
                           f"0..{needed - 1}; {FIX}")
    if num_classes is not None and len(names) > num_classes:
        raise HarnessError(f"{call}(classes=...) names {len(names)} classes but the model's logits have "
                           f"{num_classes}; {FIX}")


def insert_name_columns(table: pd.DataFrame, names: Iterable[str],
                        columns: tuple[str, ...] = ("label", "predicted")) -> None:
    """`<column>_name` right after each class-id column of `columns` (an id of <NA>: no name): the
    tracker's `label_name` and `predicted_name`, the suspects task's pair tables' `label_a_name`, ..."""
    lookup = np.asarray(list(names), dtype=object)
    for column in columns:
        ids = pd.array(table[column], dtype="Int64")
        missing = np.asarray(ids.isna(), dtype=bool)
        values = lookup[np.where(missing, 0, ids.fillna(0).to_numpy(dtype=np.int64))]
        values[missing] = None
        table.insert(list(table.columns).index(column) + 1, f"{column}_name", values)
