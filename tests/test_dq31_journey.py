"""A data-quality engineer's journey on an `.npz` of their own (dq31): digits (X as float64 features, as
`load_digits(return_X_y=True)` gives them) with 5 % of the labels flipped and 10 exact copies appended, 4
of them under another label, saved with class names and one id per row (`files`), then `--tasks suspects`
as docs/datasets.md says. Everything is checked from the CSVs alone, as the engineer would.

Measured once (seed 0, quick preset, loaded 2-core CPU, 2026-12-05): of the 94 wrong labels, all 40 of
csl's top 40 (k), 85 of the top 94, all 94 in the top 188; `suggested` the true class of 93 of 94;
AUROC csl 0.998, aum 0.992; `duplicates.csv` listed the 10 planted pairs and no other, the 4 relabelled
first; each relabelled copy ranked above its original (7th to 46th against 80th to 136th)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

CLASSES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


def _file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writes the engineer's file; returns the true labels, the copies' sources and which were relabelled."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(31)
    n = len(y)
    flip = np.sort(rng.choice(n, size=round(0.05 * n), replace=False))
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, len(flip))) % 10
    src = rng.choice(np.setdiff1d(np.arange(n), flip), size=10, replace=False)
    relabel = np.arange(10) < 4
    copy_y = y[src].copy()
    copy_y[relabel] = (copy_y[relabel] + rng.integers(1, 10, 4)) % 10
    files = np.array([f"row{i:04d}" for i in range(n + 10)])
    np.savez(path, x=np.concatenate([x, x[src]]), y=np.concatenate([noisy, copy_y]), classes=CLASSES, files=files)
    return np.concatenate([y, y[src]]), src, relabel


@pytest.mark.slow
def test_the_suspects_csvs_alone_find_the_flips_and_copies(tmp_path: Path) -> None:
    from harness import run_experiment

    true, src, relabel = _file(tmp_path / "mine.npz")
    run_experiment(dataset=f"npz:{tmp_path / 'mine.npz'}", proxies="csl,aum", tasks="suspects", seeds=1,
                   executor="inprocess", store=tmp_path / "store", out=tmp_path / "out", progress=False)
    table = pd.read_csv(tmp_path / "out" / "suspects" / "suspects_seed0.csv")
    pairs = pd.read_csv(tmp_path / "out" / "suspects" / "duplicates.csv")
    row = table["file"].str[3:].astype(int).to_numpy()  # the engineer's own id, not the harness's index
    assert (row == table["index"]).all()
    wrong = table["label"].to_numpy() != true[row]
    assert wrong.sum() == 94  # 90 flips and the 4 relabelled copies
    assert wrong[:40].sum() >= 38 and wrong[:94].sum() >= 80 and wrong[:188].sum() >= 92
    suggested = table.loc[wrong, "suggested"].to_numpy() == true[row[wrong]]
    assert suggested.sum() >= 90
    assert (CLASSES[table["suggested"]] == table["suggested_name"]).all()
    assert (CLASSES[table["label"]] == table["label_name"]).all()
    # the copies: exactly the planted pairs, those with another label first, each copy naming its original
    planted = [(f"row{s:04d}", f"row{1797 + i:04d}") for i, s in enumerate(src)]
    assert sorted(zip(pairs["file_a"], pairs["file_b"])) == sorted(planted)
    assert pairs["labels_differ"].tolist() == [True] * 4 + [False] * 6
    assert set(pairs.loc[pairs["labels_differ"], "file_b"]) == {b for (_, b), r in zip(planted, relabel) if r}
    by_file = table.set_index("file")
    for a, b in planted:
        assert json.loads(by_file.loc[b, "duplicate_files"]) == [a]
        assert json.loads(by_file.loc[a, "duplicate_files"]) == [b]
    assert int(table["duplicate_labels_differ"].sum()) == 8
