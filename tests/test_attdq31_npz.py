"""An `npz:` file that holds `classes` (names its ids index) keeps those names when its label refusals
are followed literally (attdq31). Before, with a test split, a class left empty was told
`classes=classes.astype(str)` after `np.unique(y)`: classes a, b, c labelled 0 and 2 loaded as classes
"0" and "2", every `label_name` of the suspects CSVs a number instead of the file's name; whole-number
float labels were told a remap that saved `classes=np.unique(y).astype(str)` ("0.0", "2.0"); and a text
y_test beside ids in y was told to renumber y from text labels it did not have.

Each test follows the advice the message prints (asserted verbatim), then checks every sample's class
name against the name the user meant (the file's `classes[y]`, or the text label), for y and y_test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.errors import HarnessError

NAMES = np.array(["ant", "bee", "cat"])


def _save(tmp_path: Path, name: str, **arrays: np.ndarray) -> str:
    np.savez(tmp_path / name, **arrays)
    return f"npz:{tmp_path / name}"


def _refused(spec: str) -> str:
    with pytest.raises(HarnessError) as caught:
        load_dataset(spec)
    return str(caught.value)


def _x(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 3))


def _names(spec: str) -> tuple[list[str], list[str]]:
    """The class name of every training and test sample, as the suspects CSVs' label_name writes it."""
    data = load_dataset(spec)
    classes = np.asarray(data.classes, dtype=object)
    return list(classes[data.y_train.numpy()]), list(classes[data.y_test.numpy()])


def test_an_empty_class_with_a_test_split_keeps_the_names_classes_gives(tmp_path: Path) -> None:
    y, y_test = np.array([0, 2] * 4), np.array([2, 0, 0])  # bee (1) never occurs
    said = _refused(_save(tmp_path, "a.npz", x=_x(8), y=y, x_test=_x(3), y_test=y_test, classes=NAMES))
    assert ("used = np.unique(y), check np.isin(y_test, used).all() (a test class must occur in training), then "
            "save y=np.searchsorted(used, y), y_test=np.searchsorted(used, y_test) and classes=classes[used]") in said
    classes = NAMES
    used = np.unique(y)
    assert np.isin(y_test, used).all()
    spec = _save(tmp_path, "b.npz", x=_x(8), y=np.searchsorted(used, y), x_test=_x(3),
                 y_test=np.searchsorted(used, y_test), classes=classes[used])
    assert list(load_dataset(spec).classes) == ["ant", "cat"]
    assert _names(spec) == (list(NAMES[y]), list(NAMES[y_test]))


@pytest.mark.parametrize(("y", "y_test"), [([0.0, 2.0] * 4, [2.0, 0.0, 0.0]), ([1.0, 2.0] * 4, [2.0, 1.0, 2.0])])
def test_whole_float_labels_beside_classes_are_told_astype_and_keep_their_names(
        tmp_path: Path, y: list[float], y_test: list[float]) -> None:
    """Whole numbers index `classes`: astype keeps them as ids, and the empty class is then told the
    remap that keeps the names (the remap told at once saved the values as names: "0.0", "2.0")."""
    yf, tf = np.array(y), np.array(y_test)
    said = _refused(_save(tmp_path, "a.npz", x=_x(8), y=yf, x_test=_x(3), y_test=tf, classes=NAMES))
    assert said.endswith("y has dtype float64 but must hold integer class ids 0..C-1; save y.astype(np.int64)")
    said = _refused(_save(tmp_path, "b.npz", x=_x(8), y=yf.astype(np.int64), x_test=_x(3), y_test=tf, classes=NAMES))
    assert said.endswith("save y_test.astype(np.int64)")
    y_ids, t_ids = yf.astype(np.int64), tf.astype(np.int64)
    said = _refused(_save(tmp_path, "c.npz", x=_x(8), y=y_ids, x_test=_x(3), y_test=t_ids, classes=NAMES))
    assert "classes=classes[used]" in said
    classes, used = NAMES, np.unique(y_ids)
    assert np.isin(t_ids, used).all()
    spec = _save(tmp_path, "d.npz", x=_x(8), y=np.searchsorted(used, y_ids), x_test=_x(3),
                 y_test=np.searchsorted(used, t_ids), classes=classes[used])
    assert _names(spec) == (list(NAMES[y_ids]), list(NAMES[t_ids]))


def test_whole_float_labels_without_classes_are_still_told_the_remap(tmp_path: Path) -> None:
    said = _refused(_save(tmp_path, "a.npz", x=_x(8), y=np.array([1.0, 2.0] * 4), x_test=_x(2),
                          y_test=np.array([2.0, 1.0])))
    assert "its values 1, 2 are whole numbers but not the class ids 0..C-1: number y and y_test" in said


def test_text_test_labels_beside_ids_and_classes_are_numbered_by_those_names(tmp_path: Path) -> None:
    """y holds ids into classes (not sorted: dog is 0); y_test holds the names as text."""
    names = np.array(["dog", "cat", "eel"])
    y, test_labels = np.array([0, 1, 2] * 3), np.array(["cat", "eel", "dog", "cat"])
    said = _refused(_save(tmp_path, "a.npz", x=_x(9), y=y, x_test=_x(4), y_test=test_labels, classes=names))
    assert ("index = {c: i for i, c in enumerate(classes.astype(str))}, check np.isin(y_test.astype(str), "
            "list(index)).all() (a test class must occur in training), then save "
            "y_test=np.array([index[c] for c in y_test.astype(str)])") in said
    classes, y_test = names, test_labels
    index = {c: i for i, c in enumerate(classes.astype(str))}
    assert np.isin(y_test.astype(str), list(index)).all()
    spec = _save(tmp_path, "b.npz", x=_x(9), y=y, x_test=_x(4), y_test=np.array([index[c] for c in y_test.astype(str)]),
                 classes=names)
    assert _names(spec) == (list(names[y]), list(test_labels))


def test_a_structured_x_is_fixed_by_the_code_the_message_prints_run_in_a_fresh_python(tmp_path: Path) -> None:
    """`numpy.lib.recfunctions` is no attribute of `numpy.lib` until imported: the advice, pasted into a
    fresh interpreter, raised AttributeError (numpy 2.4). Run as printed, in a new process."""
    import subprocess
    import sys

    records = np.zeros(6, dtype=[("height", "f8"), ("rooms", "i4")])
    records["height"], records["rooms"] = np.arange(6) / 2, np.arange(6) % 3
    said = _refused(_save(tmp_path, "a.npz", x=records, y=np.array([0, 1] * 3)))
    code = said.split("save its fields as columns: ", 1)[1]
    steps = [s if s.startswith("x=") or s.startswith("from ") else f"x = {s}" for s in code.split(", then save ")]
    script = "\n".join(["import numpy as np", f"x = np.load({str(tmp_path / 'a.npz')!r})['x']", *steps,
                        f"np.savez({str(tmp_path / 'b.npz')!r}, x=x, y=np.array([0, 1] * 3))"])
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    data = load_dataset(f"npz:{tmp_path / 'b.npz'}")
    assert data.x_train.shape == (6, 2, 1, 1)
    assert data.x_train[:, :, 0, 0].tolist() == np.stack([np.arange(6) / 2, np.arange(6) % 3], axis=1).tolist()


def test_one_based_ids_beside_their_names_are_told_the_shift(tmp_path: Path) -> None:
    """Labels 1.0/2.0 beside two names are told astype (they index `classes`); then 1..C are told to
    shift, not only that 2 is out of range (before: a remap that renamed the classes "1.0" and "2.0")."""
    names, y, y_test = np.array(["ant", "bee"]), np.array([1.0, 2.0] * 4), np.array([2.0, 1.0])
    said = _refused(_save(tmp_path, "a.npz", x=_x(8), y=y, x_test=_x(2), y_test=y_test, classes=names))
    assert said.endswith("save y.astype(np.int64)")
    said = _refused(_save(tmp_path, "b.npz", x=_x(8), y=y.astype(np.int64), x_test=_x(2),
                          y_test=y_test.astype(np.int64), classes=names))
    assert said.endswith("class id 2 is out of range for 2 classes; ids must be 0..1: ids 1..2 start at 1, "
                         "save y - 1 and y_test - 1")
    spec = _save(tmp_path, "c.npz", x=_x(8), y=y.astype(np.int64) - 1, x_test=_x(2), y_test=y_test.astype(np.int64) - 1,
                 classes=names)
    assert _names(spec) == (["ant", "bee"] * 4, ["bee", "ant"])


def test_an_empty_class_without_a_test_split_is_told_the_lines_that_keep_the_names(tmp_path: Path) -> None:
    y = np.array([0, 2] * 4)
    said = _refused(_save(tmp_path, "a.npz", x=_x(8), y=y, classes=NAMES))
    assert "used = np.unique(y), then save y=np.searchsorted(used, y) and classes=classes[used]" in said
    classes, used = NAMES, np.unique(y)
    spec = _save(tmp_path, "b.npz", x=_x(8), y=np.searchsorted(used, y), classes=classes[used])
    assert _names(spec) == (list(NAMES[y]), [])
