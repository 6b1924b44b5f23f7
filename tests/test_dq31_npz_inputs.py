"""A data-quality engineer's own `.npz`, saved wrong in the ways people do, is refused before training with
a message that names the fix, and the fix it names works when followed literally (dq31). Before:

- labels 1.0/2.0 were told `y.astype(np.int64)`, which was then refused for its empty class 0 (two
  round trips); now the remap is named at once;
- with a test split, the remap named (`np.unique(y, return_inverse=True)[1]`, for y alone) left y_test
  in the old numbering: y of 1/2 and a y_test of 1s loaded after the fix with every test label id 1,
  the class of y's 2s, silently (and `np.unique` of a y_test of 2s alone made them id 0, y's 1s);
- a 1-D x and a structured x were told only the shapes expected; NaN in a table named the samples, not
  the feature to impute; `X`/`Y` did not say the names are lower case; repeated `files` names loaded
  silently, though the suspects CSVs' `file` then names two samples alike.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]


def _data() -> tuple[np.ndarray, np.ndarray]:
    """60 samples of 4 float features, 2 classes with labels 1 and 2 (as a user's file might number them)."""
    rng = np.random.default_rng(31)
    return rng.normal(size=(60, 4)), np.arange(60) % 2 + 1


def _save(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> str:
    np.savez(tmp_path / name, **arrays)
    return f"npz:{tmp_path / name}"


def _refused(spec: str) -> str:
    with pytest.raises(HarnessError) as caught:
        load_dataset(spec)
    return str(caught.value)


def test_float_labels_1_and_2_name_the_remap_that_then_loads(tmp_path: Path) -> None:
    x, y = _data()
    said = _refused(_save(tmp_path, x=x, y=y.astype(np.float64)))
    assert "its values 1, 2 are whole numbers but not the class ids 0..C-1" in said
    assert "save np.unique(y, return_inverse=True)[1], and classes=np.unique(y).astype(str)" in said
    y_float = y.astype(np.float64)
    fixed = load_dataset(_save(tmp_path, "f.npz", x=x, y=np.unique(y_float, return_inverse=True)[1],
                               classes=np.unique(y_float).astype(str)))
    assert list(fixed.classes) == ["1.0", "2.0"] and fixed.y_train.tolist() == (y - 1).tolist()
    # whole numbers that are the ids already: astype is the fix, as before
    assert "save y.astype(np.int64)" in _refused(_save(tmp_path, "g.npz", x=x, y=(y - 1).astype(np.float32)))


def test_with_a_test_split_the_remap_numbers_y_test_by_the_same_classes(tmp_path: Path) -> None:
    x, y = _data()
    y_test = np.full(10, 2)  # the test split holds class 2 only
    said = _refused(_save(tmp_path, x=x, y=y, x_test=x[:10], y_test=y_test))
    assert "class id(s) [0] never occur" in said
    assert "y_test=np.searchsorted(classes, y_test)" in said and "np.isin(y_test, classes).all()" in said
    classes = np.unique(y)  # the advice, followed literally
    assert np.isin(y_test, classes).all()
    fixed = load_dataset(_save(tmp_path, "f.npz", x=x, y=np.searchsorted(classes, y), x_test=x[:10],
                               y_test=np.searchsorted(classes, y_test), classes=classes.astype(str)))
    names = np.array(fixed.classes)
    assert names[fixed.y_test.numpy()].tolist() == ["2"] * 10  # each test label still names its class
    assert names[fixed.y_train.numpy()].tolist() == [str(v) for v in y]
    # the float and text forms say the same
    said = _refused(_save(tmp_path, "t.npz", x=x, y=y.astype(np.float64), x_test=x[:10], y_test=y_test))
    assert "y_test=np.searchsorted(classes, y_test)" in said
    said = _refused(_save(tmp_path, "s.npz", x=x, y=np.array(["cat", "dog"])[y - 1], x_test=x[:10],
                          y_test=np.array(["dog"] * 10)))
    assert "y_test = np.searchsorted(classes, test_labels)" in said


@pytest.mark.parametrize("arrays, expected", [
    (lambda x, y: {"X": x, "Y": y - 1}, r"lacks array\(s\) \['x', 'y'\] \(it has \['X', 'Y'\]\) \(the names are lower"),
    (lambda x, y: {"x": x, "y": np.array(["a", "b"])[y - 1]}, r"y holds text labels \(<U1, e\.g\. 'a'\).*"
                                                               r"save classes, y = np\.unique\(labels, return_inverse"),
    (lambda x, y: {"x": np.where(np.arange(4) == 2, np.nan, x), "y": y - 1},
     r"x has NaN or inf in 60 sample\(s\) \(first: \[0, 1, 2, 3, 4\]\), in feature\(s\) \[2\]; drop or impute"),
    (lambda x, y: {"x": x[:, 0], "y": y - 1}, r"x has shape \(60,\); expected .* a single feature is a column: "
                                              r"save x\.reshape\(-1, 1\)"),
    (lambda x, y: {"x": x[:50], "y": y - 1}, r"y has shape \(60,\) but must be \(50,\), one class id per sample"),
    (lambda x, y: {"x": x.astype(object), "y": y - 1}, r"holds an object array \('x\.npy'\)"),
    (lambda x, y: {"x": np.zeros(60, dtype=[("a", "f4"), ("b", "f4")]), "y": y - 1},
     r"x is a structured array \(fields \['a', 'b'\]\); .*structured_to_unstructured\(x\)"),
])
def test_each_bad_file_is_refused_with_its_fix(tmp_path: Path, arrays, expected: str) -> None:
    x, y = _data()
    with pytest.raises(HarnessError, match=expected):
        load_dataset(_save(tmp_path, **arrays(x, y)))


def test_a_pickle_is_refused_unread(tmp_path: Path) -> None:
    x, y = _data()
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"x": x, "y": y - 1}))
    assert "not a zip archive" in _refused(f"npz:{tmp_path / 'p.npz'}")


def test_repeated_file_names_are_warned_about(tmp_path: Path) -> None:
    x, y = _data()
    files = np.array([f"row{i % 50}" for i in range(60)])
    with pytest.warns(UserWarning, match=r"files names 10 sample\(s\) with a name already used \(first: 'row0', "
                                         r"rows 0 and 50\).*use index"):
        data = load_dataset(_save(tmp_path, x=x, y=y - 1, files=files))
    assert data.sample_names == tuple(files)


def test_the_cli_refuses_before_training_without_a_traceback(tmp_path: Path) -> None:
    x, y = _data()
    spec = _save(tmp_path, x=x, y=y.astype(np.float64))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--dataset", spec, "--tasks", "suspects",
                           "--seeds", "1", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: " in done.stderr and "its values 1, 2 are whole numbers" in done.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.npz"))
