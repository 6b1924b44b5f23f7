"""Test samples that copy a training sample (harness.near_duplicates.find_duplicates and the suspects
task's `train_test_duplicates.csv`): planted exact, re-encoded and brightened copies found and nothing
else, against a brute-force computation of the rule; a table standardised by the training set's
statistics; token ids by exact copies only; and an image folder's test files named in the table."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from harness.near_duplicates import THRESHOLD, find_duplicates, find_pairs


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)


def _planted() -> tuple[np.ndarray, np.ndarray]:
    train, test = _images(200, 0), _images(50, 1)
    rng = np.random.default_rng(2)
    test[3] = train[17]  # exact
    test[9] = np.clip(train[40].astype(int) + rng.integers(-6, 7, (3, 8, 8)), 0, 255)  # re-encoded
    test[20] = (train[90] * 0.7 + 30).astype(np.uint8)  # darker, less contrast
    train[120] = train[17]  # a training copy of the exact one: the test copy pairs with the first
    return train, test


def _table(rows: np.ndarray) -> torch.Tensor:
    """An (N, D) table as an `npz:` loader holds it: (N, D, 1, 1) floats."""
    return torch.from_numpy(rows).reshape(len(rows), rows.shape[1], 1, 1)


def _brute(train: np.ndarray, test: np.ndarray, k: int = 10) -> set[tuple[int, int]]:
    """The rule, computed directly: 1 - the correlation of per-channel-centred pixels, radius =
    THRESHOLD x the median distance of a unique training image to its nearest other one."""
    def centred(x: np.ndarray) -> np.ndarray:
        f = x.astype(np.float64).reshape(len(x), 3, -1)
        f = (f - f.mean(axis=2, keepdims=True)).reshape(len(x), -1)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    unique = np.array([not any((train[j] == train[i]).all() for j in range(i)) for i in range(len(train))])
    a, b = centred(train[unique]), centred(test)
    within = 1 - a @ a.T
    np.fill_diagonal(within, np.inf)
    radius = THRESHOLD * np.median(within.min(axis=1))
    across = 1 - b @ a.T
    index = np.flatnonzero(unique)
    found = set()
    for t in range(len(test)):
        nearest = np.argsort(across[t], kind="stable")[:k]
        found |= {(t, int(index[m])) for m in nearest if across[t, m] <= radius + 1e-9}
    return found


def test_planted_copies_of_training_images_in_the_test_split_are_found_and_nothing_else() -> None:
    train, test = _planted()
    pairs, copies = find_duplicates(torch.from_numpy(train), torch.from_numpy(test))
    found = set(zip(copies["test"].tolist(), copies["train"].tolist()))
    assert found == {(3, 17), (9, 40), (20, 90)} == _brute(train, test)
    assert copies.iloc[0].tolist() == [3, 17, 0.0, False, False] and (copies["distance"] < 0.01).all()  # closest first
    assert pairs.equals(find_pairs(torch.from_numpy(train)))  # the training pairs are unchanged: (17, 120)
    assert set(zip(pairs["a"], pairs["b"])) == {(17, 120)}
    _, exact = find_duplicates(torch.from_numpy(train), torch.from_numpy(test), mode="exact")
    assert exact.to_dict("list") == {"test": [3], "train": [17], "distance": [0.0], "mirrored": [False],
                                     "shifted": [False]}
    _, off = find_duplicates(torch.from_numpy(train), torch.from_numpy(test), mode="off")
    assert off.empty and list(off.columns) == ["test", "train", "distance", "mirrored", "shifted"]


def test_a_table_is_standardised_by_the_training_sets_statistics() -> None:
    """A test row is compared in the training set's standard deviations: a test split on another
    scale (all rows x 1,000) finds no copies, and a re-measured training row is found."""
    rng = np.random.default_rng(3)
    scale = np.array([1000.0, 1.0, 50.0, 0.01, 7.0], dtype=np.float32)
    train = (rng.normal(size=(300, 5)) * scale).astype(np.float32)
    test = (rng.normal(size=(40, 5)) * scale).astype(np.float32)
    test[5] = train[11] + 0.02 * train.std(axis=0) * rng.normal(size=5).astype(np.float32)
    _, copies = find_duplicates(_table(train), _table(test))
    assert set(zip(copies["test"], copies["train"])) == {(5, 11)}
    _, none = find_duplicates(_table(train), _table(test * 1000))
    assert none.empty


def test_a_feature_constant_in_training_weighs_nothing_for_test_rows() -> None:
    """A column that never varies in training (a site id, a unit) has no spread to measure a test
    row's difference in: a re-measured training row whose constant column reads otherwise is still
    its copy, and the column does not make every other test row far."""
    rng = np.random.default_rng(4)
    train = rng.normal(size=(300, 5)).astype(np.float32)
    train[:, 2] = 7.0
    test = rng.normal(size=(40, 5)).astype(np.float32)
    test[:, 2] = 1000.0
    test[5] = train[11] + 0.02 * rng.normal(size=5).astype(np.float32)
    test[5, 2] = 1000.0
    _, copies = find_duplicates(_table(train), _table(test))
    assert set(zip(copies["test"], copies["train"])) == {(5, 11)}


def test_token_ids_are_matched_by_exact_copies_only() -> None:
    train = torch.randint(1, 50, (30, 12, 1, 1))
    test = torch.randint(1, 50, (10, 12, 1, 1))
    test[4] = train[7]
    test[6] = train[8]
    test[6, 0] = (test[6, 0] % 49) + 1  # one token off: no copy
    _, copies = find_duplicates(train, test)
    assert copies.to_dict("list") == {"test": [4], "train": [7], "distance": [0.0], "mirrored": [False],
                                      "shifted": [False]}


def _folder(root: Path, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
            test_labels: np.ndarray) -> None:
    for split, x, y in (("train", train, train_labels), ("test", test, test_labels)):
        for i, (image, label) in enumerate(zip(x, y)):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{split}{i:03d}.png")


def test_the_suspects_task_writes_the_copies_with_files_labels_and_a_figure(tmp_path: Path, monkeypatch) -> None:
    from harness.api import run_experiment
    from harness.datasets import load_dataset

    train, test = _planted()
    train_labels, test_labels = np.arange(200) % 4, np.arange(50) % 4
    train_labels[120] = train_labels[17]  # its training copy, in the same class folder after it
    test_labels[3], test_labels[9] = train_labels[17], train_labels[40]
    test_labels[20] = (train_labels[90] + 1) % 4  # a copy under another label: listed first
    _folder(tmp_path / "data", train, train_labels, test, test_labels)
    name = f"imagefolder:{tmp_path / 'data'}"
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    data = load_dataset(name)
    with pytest.warns(UserWarning, match=r"suspects: 3 of the 50 test samples copy a training sample, 1 under "
                                         r"another label \(suspects/train_test_duplicates.csv\): the test accuracy"):
        run_experiment(dataset=name, model="mlp", proxies="final_loss", tasks="suspects", seeds=1, epochs=1,
                       out=tmp_path / "out", store=tmp_path / "store", executor="inprocess", progress=False)
    table = pd.read_csv(tmp_path / "out" / "suspects" / "train_test_duplicates.csv")
    assert list(table.columns) == ["test", "train", "distance", "mirrored", "shifted", "label_test", "label_test_name",
                                   "label_train", "label_train_name", "labels_differ", "file_test", "file_train"]
    assert table["labels_differ"].tolist() == [True, False, False]
    for row in table.itertuples():  # every row names the files whose pixels it pairs
        assert row.file_test == data.test_sample_names[row.test] and row.file_train == data.sample_names[row.train]
        assert row.label_test == int(data.y_test[row.test]) and row.label_train == int(data.y_train[row.train])
    for f in table["file_test"]:  # the file holds the planted test image
        assert (np.asarray(Image.open(tmp_path / "data" / f)).transpose(2, 0, 1) == test[int(Path(f).stem[4:])]).all()
    assert {int(Path(f).stem[4:]) for f in table["file_test"]} == {3, 9, 20}
    assert {int(Path(f).stem[5:]) for f in table["file_train"]} == {17, 40, 90}
    assert (tmp_path / "out" / "figures" / "train_test_duplicates.png").stat().st_size > 1000


def test_a_test_subset_names_the_files_it_kept(tmp_path: Path) -> None:
    """Under --subset the test split keeps a round robin of its classes; each kept image's name is
    the file its pixels came from."""
    from harness.datasets import load_dataset

    train, test = _images(40, 4), _images(1200, 5)
    _folder(tmp_path / "data", train, np.arange(40) % 3, test, np.arange(1200) % 3)
    data = load_dataset(f"imagefolder:{tmp_path / 'data'}", subset=10, cache_dir=tmp_path / "cache")
    assert len(data.test_sample_names) == len(data.x_test) == 1000
    for i in (0, 1, 500, 999):
        stem = Path(data.test_sample_names[i]).stem
        assert (data.x_test[i].numpy() == test[int(stem[4:])]).all()


def test_no_test_split_and_a_dataset_without_names_write_what_they_have(tmp_path: Path) -> None:
    """digits has a test split and no files: the table has no file columns (and no false copies)."""
    from harness.api import run_experiment

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no copies found: no warning
        result = run_experiment(dataset="digits", proxies="final_loss", tasks="suspects", seeds=1, epochs=1,
                                subset=300, store=tmp_path / "store", executor="inprocess", progress=False)
    table = result.tables["suspects/train_test_duplicates.csv"]
    assert list(table.columns) == ["test", "train", "distance", "mirrored", "shifted", "label_test", "label_test_name",
                                   "label_train", "label_train_name", "labels_differ"]


def test_distance_zero_is_a_byte_equal_copy_only() -> None:
    """A brightness shift correlates perfectly: 1 - cos rounded to exactly 0 for half of such copies,
    so `distance == 0` miscounted byte-equal copies. Near pairs now report at least NEAR_FLOOR."""
    from harness.near_duplicates import NEAR_FLOOR

    rng = np.random.default_rng(6)
    train = rng.integers(0, 200, (100, 3, 8, 8), dtype=np.uint8)
    test = rng.integers(0, 200, (12, 3, 8, 8), dtype=np.uint8)
    for j in range(10):
        test[j] = train[j] + 1 + j  # brighter, not clipped: correlation 1
    test[11] = train[50]  # byte-equal
    train[61] = train[60] + 3
    pairs, copies = find_duplicates(torch.from_numpy(train), torch.from_numpy(test))
    exact = copies[copies["distance"] == 0]
    assert exact[["test", "train"]].values.tolist() == [[11, 50]]
    shifted = copies[copies["test"] < 10]
    assert len(shifted) == 10 and (shifted["distance"] >= NEAR_FLOOR).all() and (shifted["distance"] < 1e-6).all()
    assert pairs[["a", "b"]].values.tolist() == [[60, 61]] and pairs["distance"].iloc[0] >= NEAR_FLOOR


def test_a_feature_varying_below_float32s_resolution_counts_as_constant() -> None:
    """A spread of ~1e-38 made the weight ~1e38 and test rows infinite: "Input X contains infinity"."""
    rng = np.random.default_rng(5)
    train = rng.normal(size=(300, 4)).astype(np.float32)
    train[:, 1] = rng.choice(np.array([0.0, 2e-38], dtype=np.float32), size=300)
    test = rng.normal(size=(30, 4)).astype(np.float32)
    test[:, 1] = 100.0
    test[7] = train[3] + 0.002 * rng.normal(size=4).astype(np.float32)
    test[7, 1] = 100.0
    _, copies = find_duplicates(_table(train), _table(test))
    assert set(zip(copies["test"], copies["train"])) == {(7, 3)}
