"""The suspects task's pair tables name each label's class next to its id, as the suspects CSV does
with `label_name`: ids alone sent the reader to look up the class order."""

from __future__ import annotations

import warnings
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from harness.tasks.base import EvalContext
from harness.tasks.suspects import duplicate_pairs
from harness.tasks.suspects_labels import with_class_names


def _ctx() -> SimpleNamespace:
    """Six 1 x 4 x 4 images: 3 copies 0 under another label, 5 copies 1 under its own (each pairs with
    its first copy: (0, 3), (1, 5)); test image 0
    copies training image 2 under another label."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=gen)
    x[3], x[5] = x[0], x[1]
    x_test = torch.stack([x[2], torch.randint(0, 256, (1, 4, 4), dtype=torch.uint8, generator=gen)])
    dataset = SimpleNamespace(x_train=x, x_test=x_test, y_test=torch.tensor([0, 1]), classes=["cat", "dog", "ship"],
                              sample_names=None, test_sample_names=None, is_image=False, is_tokens=False)
    ctx = SimpleNamespace(data=SimpleNamespace(dataset=dataset, labels=np.array([0, 1, 2, 1, 0, 1])), out=None,
                          artifacts={}, tables={})
    ctx.keep_table = partial(EvalContext.keep_table, ctx)
    return ctx


def test_both_pair_tables_name_each_label_next_to_its_id() -> None:
    ctx = _ctx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test copy's warning is checked elsewhere
        duplicate_pairs(ctx, "exact", 0.13, 4)
    pairs = ctx.tables["suspects/duplicates.csv"].set_index("a")
    columns = list(pairs.columns)
    assert columns[columns.index("label_a") + 1] == "label_a_name"
    assert columns[columns.index("label_b") + 1] == "label_b_name"
    assert pairs.loc[0, ["b", "label_a", "label_a_name", "label_b", "label_b_name"]].tolist() == [3, 0, "cat", 1, "dog"]
    assert pairs.loc[1, ["b", "label_a_name", "label_b_name"]].tolist() == [5, "dog", "dog"]
    copies = ctx.tables["suspects/train_test_duplicates.csv"]
    columns = list(copies.columns)
    assert columns[columns.index("label_test") + 1] == "label_test_name"
    assert columns[columns.index("label_train") + 1] == "label_train_name"
    assert copies[["test", "train", "label_test_name", "label_train_name"]].values.tolist() == [[0, 2, "cat", "ship"]]


def test_names_go_next_to_their_ids_whatever_other_columns_the_frame_has() -> None:
    pairs = pd.DataFrame({"a": [0], "b": [1], "extra": [True], "label_a": [2], "label_b": [0], "last": [1.0]})
    named = with_class_names(pairs, np.array(["cat", "dog", "ship"], dtype=object), ("label_a", "label_b"))
    assert list(named.columns) == ["a", "b", "extra", "label_a", "label_a_name", "label_b", "label_b_name", "last"]
    assert named.iloc[0].tolist() == [0, 1, True, 2, "ship", 0, "cat", 1.0]
    assert list(pairs.columns) == ["a", "b", "extra", "label_a", "label_b", "last"]  # the caller's frame is kept
