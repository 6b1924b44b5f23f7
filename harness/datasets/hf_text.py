"""Text of an `hf:` dataset as token ids (the text models' input): tokenized, cut to `max_length`,
padded. What tokenizing does to the samples is said, not left to be found in the scores: a blank
text trains as padding alone (and every blank text is an exact copy of every other), and a cut
text is what the model sees and what the duplicate search compares."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from harness.errors import HarnessError

#: Rows named in a warning at most.
SHOWN = 5


def tokenize(name: str, tokenizer: Any, split: Any, column: str, max_length: int, split_name: str) -> list[list[int]]:
    texts = split[column]
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise HarnessError(f"{name}: row {i} of column {column!r} is {type(t).__name__}, not text; drop or fill "
                               "such rows")
    if not texts:
        return []
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        warnings.warn(f"{name}: {len(blank)} {split_name} text(s) are empty or only white space (rows "
                      f"{_rows(blank)}): each trains as padding alone and is an exact copy of every other; drop or "
                      "fill such rows", UserWarning, stacklevel=4)
    out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    ids = [list(row) for row in out["input_ids"]]
    full = [i for i, row in enumerate(ids) if len(row) >= max_length]
    if full:
        warnings.warn(f"{name}: {len(full)} of {len(ids)} {split_name} texts reach max_length={max_length} tokens "
                      f"(rows {_rows(full)}): longer ones are cut there, and the model, the scores and the duplicate "
                      "search see only their first tokens; raise max_length to keep more", UserWarning, stacklevel=4)
    return ids


def pad(rows: list[list[int]], width: int) -> np.ndarray:
    """Token ids + 1, right-padded with 0, as (N, width, 1, 1) int64."""
    x = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        x[i, : len(row)] = np.asarray(row, dtype=np.int64) + 1
    return x[:, :, None, None]


def _rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:SHOWN])) + (", ..." if len(rows) > SHOWN else "")
