"""The suspects task's duplicate tables and figures: the pairs `harness.near_duplicates` finds, with
their labels, class names and files (`suspects/duplicates.csv`, `suspects/train_test_duplicates.csv`),
the columns each suspects CSV gains from them, and the figures that draw them. Apart from the task
class (`harness.tasks.suspects`), which decides whether and when to search: the memory check before
the search stays there, where the tests patch what it reads.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from harness.datasets import Dataset
from harness.near_duplicates import find_duplicates
from harness.tasks.base import EvalContext
from harness.tasks.suspects_labels import with_class_names

#: Images per row of the figures.
COLUMNS = 8


def pictures(ctx: EvalContext, index: Iterable[int]) -> dict[int, np.ndarray]:
    """The (C, H, W) uint8 images of the samples drawn, by index: only they leave the device, not the set."""
    index = sorted(int(i) for i in index)
    images = ctx.data.x[torch.as_tensor(index, dtype=torch.long, device=ctx.data.x.device)].cpu().numpy()
    return dict(zip(index, images))


def named(names: Sequence[str] | None, index: Iterable[int]) -> dict[int, str] | None:
    """The files of the samples drawn, by index, for the figures' captions; None when the set names none."""
    return None if names is None else {int(i): names[int(i)] for i in index}


def partner_columns(pairs: pd.DataFrame, n: int, files: Sequence[str] | None = None) -> dict[str, Any]:
    """Per sample: its duplicates (`;`-separated indices), their files when the set names its samples
    by file (`duplicate_files`, `partner_files`), and whether any of its copies has another
    label. Copies of one picture (distance 0) pair with the first copy only, so a sample's own pairs
    miss some: with copies 0, 3 and 5 labelled A, A and B, sample 3 pairs only with 0 (A) but is as
    much a copy of 5 (B), and of whatever is near 0. The flag is taken over every copy of the sample
    and their partners' copies, so two identical samples with one label get one flag."""
    partners: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(pairs["a"], pairs["b"]):
        partners[a].append(int(b))
        partners[b].append(int(a))
    columns: dict[str, Any] = {"duplicates": [";".join(map(str, sorted(p))) for p in partners]}
    if files is not None:
        columns["duplicate_files"] = partner_files(partners, files)
    return columns | {"duplicate_labels_differ": _conflicting(pairs, n)}


def partner_files(partners: list[list[int]], files: Sequence[str]) -> list[str]:
    """Each sample's partners' files as a JSON list, in the order of `duplicates` (by index), `[]` for
    none. JSON, not a separator: a file name may hold any character but `/` and NUL (`;`, `,`, quotes,
    a newline), so no separator splits every list right; `json.loads` of the cell gives the names exactly,
    and JSON's escapes keep a newline in a name out of the CSV's lines. Non-ASCII is written as itself."""
    return [json.dumps([files[i] for i in sorted(p)], ensure_ascii=False) for p in partners]


def _conflicting(pairs: pd.DataFrame, n: int) -> np.ndarray:
    """Samples with a copy (distance 0, transitively) or a copy's partner under another label."""
    a, b = pairs["a"].to_numpy(dtype=np.int64), pairs["b"].to_numpy(dtype=np.int64)
    label = np.full(n, -1, dtype=np.int64)
    label[a], label[b] = pairs["label_a"].to_numpy(), pairs["label_b"].to_numpy()
    same = pairs["distance"].to_numpy() == 0
    graph = coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(n, n))
    group = connected_components(graph, directed=False)[1]
    seen: dict[int, set[int]] = {}  # group -> labels of its members and of its partners' groups
    for i in np.flatnonzero(label >= 0):
        seen.setdefault(int(group[i]), set()).add(int(label[i]))
    own = {g: set(labels) for g, labels in seen.items()}
    for ga, gb in zip(group[a[~same]], group[b[~same]]):
        seen[int(ga)] |= own[int(gb)]
        seen[int(gb)] |= own[int(ga)]
    mixed = [g for g, labels in seen.items() if len(labels) > 1]
    return (label >= 0) & np.isin(group, mixed)


def sample_column(dataset: Dataset) -> str:
    """The column that names each sample in the tables: its file (image folders; `npz:` with a `files`
    array: any name, a table row's id too), its text (`hf:` text)."""
    return "text" if dataset.is_tokens else "file"


def write_pairs(ctx: EvalContext, mode: str, threshold: float, k: int) -> pd.DataFrame:
    """The copies and near copies among the training samples (`mode` near or exact; the same for every
    seed): written to `suspects/duplicates.csv`, pairs whose labels differ first, and the first k/2
    pairs drawn; the test samples' copies likewise (`test_copies`)."""
    dataset, labels = ctx.data.dataset, np.asarray(ctx.data.labels)
    pairs, copies = find_duplicates(dataset.x_train, dataset.x_test, mode, threshold)
    pairs["label_a"], pairs["label_b"] = labels[pairs["a"]], labels[pairs["b"]]
    pairs["labels_differ"] = pairs["label_a"] != pairs["label_b"]
    pairs = with_class_names(pairs, np.asarray(dataset.classes, dtype=object), ("label_a", "label_b"))
    if dataset.sample_names is not None:
        files, column = np.asarray(dataset.sample_names, dtype=object), sample_column(dataset)
        pairs[f"{column}_a"], pairs[f"{column}_b"] = files[pairs["a"]], files[pairs["b"]]
    pairs = pairs.sort_values("labels_differ", ascending=False, kind="stable").reset_index(drop=True)
    ctx.keep_table("suspects", "suspects/duplicates.csv", pairs)
    drawn = pairs.head(max(1, k // 2))
    if dataset.is_image and len(drawn) and ctx.out is not None:
        from harness.plots import plot_pairs

        out = Path(ctx.out)
        shown = set(drawn["a"]) | set(drawn["b"])
        figure = plot_pairs(drawn, pictures(ctx, shown), out / "figures" / "duplicates.png",
                            list(dataset.classes), COLUMNS, total=len(pairs), files=named(dataset.sample_names, shown))
        ctx.artifacts.setdefault("figures", []).append(str(figure.relative_to(out)))
    if len(dataset.x_test):
        test_copies(ctx, copies, k)
    return pairs


def test_copies(ctx: EvalContext, copies: pd.DataFrame, k: int) -> None:
    """The test samples that copy a training sample (test, train, distance), written to
    `suspects/train_test_duplicates.csv` with both labels and files, pairs whose labels differ first,
    the first k/2 drawn; a warning says how many, since test accuracy counts them as generalisation."""
    dataset, labels = ctx.data.dataset, np.asarray(ctx.data.labels)
    copies["label_test"], copies["label_train"] = dataset.y_test.numpy()[copies["test"]], labels[copies["train"]]
    copies["labels_differ"] = copies["label_test"] != copies["label_train"]
    copies = with_class_names(copies, np.asarray(dataset.classes, dtype=object), ("label_test", "label_train"))
    column = sample_column(dataset)
    if dataset.test_sample_names is not None:
        copies[f"{column}_test"] = np.asarray(dataset.test_sample_names, dtype=object)[copies["test"]]
    if dataset.sample_names is not None:
        copies[f"{column}_train"] = np.asarray(dataset.sample_names, dtype=object)[copies["train"]]
    copies = copies.sort_values("labels_differ", ascending=False, kind="stable").reset_index(drop=True)
    ctx.keep_table("suspects", "suspects/train_test_duplicates.csv", copies)
    if len(copies):
        found, differ = copies["test"].nunique(), int(copies.drop_duplicates("test")["labels_differ"].sum())
        where = " (suspects/train_test_duplicates.csv)" if ctx.out is not None else ""
        warnings.warn(f"suspects: {found} of the {len(dataset.x_test)} test samples copy a training sample, {differ} "
                      f"under another label{where}: the test accuracy counts them as generalisation", stacklevel=2)
    drawn = copies.head(max(1, k // 2))
    if dataset.is_image and len(drawn) and ctx.out is not None:
        from harness.plots import plot_pairs

        out, tests = Path(ctx.out), sorted(set(drawn["test"]))
        test_images = dataset.x_test[torch.as_tensor(tests, dtype=torch.long)].numpy()
        pairs = drawn.rename(columns={"test": "a", "train": "b", "label_test": "label_a", "label_train": "label_b"})
        figure = plot_pairs(pairs, pictures(ctx, set(drawn["train"])), out / "figures" / "train_test_duplicates.png",
                            list(dataset.classes), COLUMNS, total=len(copies),
                            pictures_a=dict(zip(tests, test_images)), names=("test", "train"),
                            files=named(dataset.sample_names, drawn["train"]),
                            files_a=named(dataset.test_sample_names, tests))
        ctx.artifacts.setdefault("figures", []).append(str(figure.relative_to(out)))
