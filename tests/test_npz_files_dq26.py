"""`npz:` files may name their samples (`files`, `files_test`), so that the suspects task's fix list
names what to open: before, an `npz:` user got row numbers only and mapped them back by hand (dq26)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.experiment import Experiment


def _digits(tmp_path: Path, **extra: np.ndarray) -> tuple[Path, np.ndarray]:
    """Digits as uint8 images, sample 7's label moved to another class and sample 20 a copy of 400 under
    another label, saved with one name per image (`img0000.png`, ...)."""
    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)
    y = digits.target.copy()
    y[7] = (y[7] + 5) % 10
    x[20], y[20] = x[400], (y[400] + 1) % 10
    names = np.array([f"img{i:04d}.png" for i in range(len(y))])
    path = tmp_path / "named.npz"
    np.savez(path, x=x, y=y, files=names, **extra)
    return path, y


def test_an_npz_with_files_names_its_suspects_and_copies(tmp_path: Path, make_config) -> None:
    path, y = _digits(tmp_path)
    exp = Experiment(make_config(dataset=f"npz:{path}", tasks=("suspects",), proxies="csl", epochs=10, lr=0.1,
                                 task_args={"suspects": {"k": 8}}))
    exp.run()
    out = Path(exp.cfg.out)
    table = pd.read_csv(out / "suspects" / "suspects_seed0.csv", dtype={"duplicates": str})
    assert table["file"].tolist() == [f"img{i:04d}.png" for i in table["index"]]
    true = load_digits().target
    # the copy under another label, then the moved label, top the list, each with its true class suggested
    assert table["file"].head(2).tolist() == ["img0020.png", "img0007.png"]
    assert table["suggested"].head(2).tolist() == [true[400], true[7]]
    pairs = pd.read_csv(out / "suspects" / "duplicates.csv")
    first = pairs.iloc[0]
    assert (first["file_a"], first["file_b"], first["distance"], bool(first["labels_differ"])) == (
        "img0020.png", "img0400.png", 0.0, True)
    scores = pd.read_csv(next((out / "scores").glob("*.csv")))
    assert scores["file"].tolist() == [f"img{i:04d}.png" for i in range(len(y))]


def test_files_follow_the_subset_and_the_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8), np.arange(30) % 3
    x_test, y_test = x[:6], np.array([0, 0, 1, 1, 2, 2])
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, files=np.arange(100, 130),
             files_test=np.array([f"t{i}".encode() for i in range(6)]))
    data = load_dataset(f"npz:{path}", subset=12)
    assert data.sample_names == tuple(str(i) for i in range(100, 112))  # integer ids become text
    assert data.test_sample_names == ("t0", "t1", "t2", "t3", "t4", "t5")
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=x, y=y)
    assert load_dataset(f"npz:{plain}").sample_names is None


@pytest.mark.parametrize(("extra", "message"), [
    ({"files": np.array(["a", "b"])}, "files must be a 1-D array of 30 names .* got <U1 \\(2,\\)"),
    ({"files": np.zeros(30)}, "files must be a 1-D array of 30 names .* got float64"),
    ({"files_test": np.array(["a"])}, "files_test without files"),
    ({"files": np.array([b"caf\xe9"] * 30)}, "files name b'caf\\\\xe9' is not valid UTF-8 text; save files as str"),
])
def test_files_that_do_not_fit_are_refused_with_the_fix(tmp_path: Path, extra: dict, message: str) -> None:
    x, y = np.zeros((30, 1, 4, 4), dtype=np.uint8), np.arange(30) % 3
    x[:, 0, 0, 0] = np.arange(30)
    np.savez(tmp_path / "bad.npz", x=x, y=y, **extra)
    with pytest.raises(HarnessError, match=message):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_test_names_stay_with_their_samples_when_a_subset_keeps_some(tmp_path: Path) -> None:
    """`--subset 10` keeps 1,000 of 1,200 test samples, round robin over the classes: each kept name
    must be its sample's (the name carries the sample's pixel value and label here)."""
    x, y = np.zeros((30, 1, 2, 2), dtype=np.uint8), np.arange(30) % 3
    y_test = np.repeat([0, 1, 2], [600, 300, 300])
    x_test = np.zeros((1200, 1, 2, 2), dtype=np.uint8)
    x_test[:, 0, 0, 0] = np.arange(1200) % 251
    names = np.array([f"t{i % 251}_{c}" for i, c in enumerate(y_test)])
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test, files=np.arange(30), files_test=names)
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", subset=10)
    assert data.test_sample_names is not None and len(data.test_sample_names) == len(data.y_test) == 1000
    said = [name[1:].split("_") for name in data.test_sample_names]
    assert [int(v) for v, _ in said] == data.x_test[:, 0, 0, 0].tolist()
    assert [int(c) for _, c in said] == data.y_test.tolist()
    assert data.y_test.bincount().tolist() == [400, 300, 300]
