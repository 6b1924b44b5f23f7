"""benchmarks/measure_suggested_label.py builds its data from a seed alone: the same seed gives the same
files and labels, and exactly the requested number of samples carry a class other than their own.
Its counting reads a ranked suspects table against that truth and refuses a table that is not it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "measure_suggested_label.py"
_spec = importlib.util.spec_from_file_location("_measure_suggested_label_seeds23", SCRIPT)
assert _spec is not None and _spec.loader is not None
measure = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = measure  # dataclasses look their module up there
_spec.loader.exec_module(measure)

CLASSES = ("ant", "bee", "cat", "dog")


def _source(root: Path, per_class: int = 6) -> Path:
    """A tiny image folder: train/<class>/<stem>.jpg numbered across classes, test/<class>/."""
    for c, name in enumerate(CLASSES):
        for split, count in (("train", per_class), ("test", 3)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                (root / split / name / f"{c * 100 + i:05d}.jpg").write_bytes(f"{split}{name}{i}".encode())
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    return root


def _layout(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_image_folder_moves_exactly_the_asked_number_to_another_class_the_same_way_every_time(
        tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    first = measure.build_image_folder(source, tmp_path / "a", 3, per_class=5, moved=7, test_per_class=2)
    again = measure.build_image_folder(source, tmp_path / "b", 3, per_class=5, moved=7, test_per_class=2)
    other = measure.build_image_folder(source, tmp_path / "c", 4, per_class=5, moved=7, test_per_class=2)
    assert _layout(tmp_path / "a") == _layout(tmp_path / "b")
    pd.testing.assert_frame_equal(first.truth, again.truth)
    assert _layout(tmp_path / "a") != _layout(tmp_path / "c")  # the seed decides which move where
    assert not first.truth["given"].equals(other.truth["given"])
    train = [k for k in _layout(tmp_path / "a") if k.startswith("train/")]
    assert len(train) == 20 and sorted(train) == sorted(first.truth.index)  # the first 5 of each class
    assert sum(k.startswith("test/") for k in _layout(tmp_path / "a")) == 8
    moved = 0
    for rel in train:
        folder, stem = rel.split("/")[1], int(Path(rel).stem)
        own = stem // 100  # the class it came from
        assert stem % 100 < 5  # the first five by name, not the sixth
        assert first.truth.loc[rel, "true"] == own and first.truth.loc[rel, "given"] == CLASSES.index(folder)
        moved += folder != CLASSES[own]
    assert moved == 7 == int((first.truth["given"] != first.truth["true"]).sum())
    assert first.dataset == f"imagefolder:{tmp_path / 'a'}" and first.key == "file"


def test_the_digits_flip_a_tenth_to_other_classes_the_same_way_every_time(tmp_path: Path) -> None:
    first = measure.build_digits(tmp_path / "a", 0)
    again = measure.build_digits(tmp_path / "b", 0)
    other = measure.build_digits(tmp_path / "c", 1)
    pd.testing.assert_frame_equal(first.truth, again.truth)
    flipped = first.truth["given"] != first.truth["true"]
    assert flipped.sum() == 180 and len(first.truth) == 1797
    assert (flipped != (other.truth["given"] != other.truth["true"])).any()
    with np.load(tmp_path / "a" / "flipped.npz") as saved:
        np.testing.assert_array_equal(saved["y"], first.truth["given"])


def _built() -> object:
    truth = pd.DataFrame({"given": [0, 1, 2, 1, 0], "true": [0, 2, 2, 0, 1]},
                         index=pd.Index(range(5), name="index"))
    return measure.Built("npz:x.npz", "index", truth)


def test_counts_read_the_ranked_table_against_the_truth() -> None:
    built = _built()  # samples 1, 3 and 4 are wrong (true 2, 0, 1)
    table = pd.DataFrame({"index": [3, 1, 0, 4, 2], "label": [1, 1, 0, 0, 2], "suggested": [0, 0, 1, 1, 0],
                          "predicted": [1, 2, 0, 0, 2], "p_suggested": [0.8, 0.4, 0.1, 0.6, 0.2]})
    got = measure.counts(table, built, table["predicted"].to_numpy(), top=2)
    assert got == {"wrong": 3, "suggested": 2, "predicted": 1, "top": 2, "top_suggested": 1,
                   "p_sug_wrong": pytest.approx(0.6), "p_sug_other": pytest.approx(0.15)}
    table.loc[0, "label"] = 0  # not the labels the data was built with
    with pytest.raises(SystemExit, match="not the built ones"):
        measure.counts(table, built, table["predicted"].to_numpy(), top=2)


def test_the_combined_prediction_is_the_seeds_majority() -> None:
    tables = [pd.DataFrame({"index": [0, 1, 2], "predicted": p}) for p in ([1, 2, 0], [1, 0, 1], [2, 0, 2])]
    got = measure.majority(tables, "index", pd.Series([2, 0, 1]))
    np.testing.assert_array_equal(got, [-1, 1, 0])  # sample 2: 0, 1, 2, no majority
