"""`duplicate_files` attacked as a skeptical user would (attdq31): every listed name must be a file of the
folder that holds the row's copy (checked by its pixels), in the order of `duplicates`, in both seeds'
CSVs and the combined one, read by pandas and by the csv module alike. The folder is read with
`,exclude=FILE` (the excluded image is named nowhere), has a test split holding a copy of a training
image, a picture in four training copies named `[]`, `null`, with an emoji and with a backslash, two
different images named é in NFC and in NFD (each with its own copy), a mirrored and a shifted copy.
`duplicates=off` writes neither column. No bug was found here; this pins what was checked.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.tasks.suspects_pairs import partner_columns

SIDE = 16  # the shifted search needs 16 pixels a side
NFC, NFD = unicodedata.normalize("NFC", "é.png"), unicodedata.normalize("NFD", "é.png")
#: The training images of one picture, once `train/ant/orig.png` (a fifth copy) is excluded.
FOUR = ["train/ant/[].png", "train/ant/back\\slash.png", "train/bee/emoji 😀.png", "train/bee/null.png"]


def _folder(root: Path) -> None:
    rng = np.random.default_rng(7)

    def save(rel: str, pixels: np.ndarray) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / rel)

    def noise(side: int = SIDE) -> np.ndarray:
        return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)

    for cls in ("ant", "bee"):
        for i in range(14):
            save(f"train/{cls}/r{i:02d}.png", noise())
        for i in range(4):
            save(f"test/{cls}/t{i:02d}.png", noise())
    picture = noise()
    for rel in ["train/ant/orig.png", *FOUR, "test/bee/t copy.png"]:
        save(rel, picture)
    a, b, m, s = noise(), noise(), noise(), noise(SIDE + 2)
    save(f"train/ant/{NFC}", a)
    save("train/bee/copy_of_nfc.png", a)
    save(f"train/ant/{NFD}", b)
    save("train/bee/copy_of_nfd.png", b)
    save("train/ant/m_orig.png", m)
    save("train/bee/m_mirror.png", m[:, ::-1].copy())
    save("train/ant/s_orig.png", s[:SIDE, :SIDE].copy())
    save("train/bee/s_shift.png", s[2:, 2:].copy())


def _run(tmp: Path, mode: str) -> Path:
    from harness.api import run_experiment

    mp = pytest.MonkeyPatch()
    mp.setenv("MEMPROX_CACHE", str(tmp / "cache"))
    try:
        run_experiment(dataset=f"imagefolder:{tmp / 'data'},exclude={tmp / 'drop.txt'}", model="mlp",
                       proxies="final_loss", tasks="suspects", seeds=2, epochs=1, out=tmp / mode, store=tmp / "store",
                       executor="inprocess", progress=False, task_args={"suspects": {"k": 4, "duplicates": mode}})
    finally:
        mp.undo()
    return tmp / mode / "suspects"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("attdq31_files")
    _folder(tmp / "data")
    (tmp / "drop.txt").write_text("train/ant/orig.png\n")
    return tmp, _run(tmp, "near")


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["suspects_seed0.csv", "suspects_seed1.csv", "suspects.csv"])
def test_every_listed_file_is_the_rows_copy_in_the_order_of_duplicates(run: tuple[Path, Path], name: str) -> None:
    tmp, folder = run
    table = pd.read_csv(folder / name, keep_default_na=False, dtype={"file": str, "duplicates": str})
    with open(folder / name, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["duplicate_files"] for r in rows] == list(table["duplicate_files"])  # csv module reads the same
    by_index = dict(zip(table["index"], table["file"]))
    assert "train/ant/orig.png" not in by_index.values()  # excluded: named nowhere
    kinds = {}
    for row in table.itertuples():
        files = json.loads(row.duplicate_files)
        assert files == [by_index[int(i)] for i in row.duplicates.split(";") if i]
        own = _pixels(tmp / "data" / row.file)
        for partner in files:
            theirs = _pixels(tmp / "data" / partner)
            exact, mirrored = (own == theirs).all(), (own == theirs[:, ::-1]).all()
            shifted = (own[2:, 2:] == theirs[:-2, :-2]).all() or (own[:-2, :-2] == theirs[2:, 2:]).all()
            assert exact or mirrored or shifted, (row.file, partner)
            kinds[(row.file, partner)] = "exact" if exact else "mirrored" if mirrored else "shifted"
    first = table.loc[table["file"] == FOUR[0], "duplicate_files"].item()
    assert json.loads(first) == FOUR[1:]  # 3+ copies: the first lists the others, by index
    assert kinds[("train/bee/m_mirror.png", "train/ant/m_orig.png")] == "mirrored"
    assert kinds[("train/ant/s_orig.png", "train/bee/s_shift.png")] == "shifted"
    assert kinds[(f"train/ant/{NFC}", "train/bee/copy_of_nfc.png")] == "exact"  # both forms kept apart
    assert kinds[(f"train/ant/{NFD}", "train/bee/copy_of_nfd.png")] == "exact"
    assert sum(f != "[]" for f in table["duplicate_files"]) == 12


@pytest.mark.slow
def test_the_test_copy_names_files_of_the_folder(run: tuple[Path, Path]) -> None:
    tmp, folder = run
    copies = pd.read_csv(folder / "train_test_duplicates.csv", keep_default_na=False)
    assert list(zip(copies["file_test"], copies["file_train"])) == [("test/bee/t copy.png", FOUR[0])]
    assert (_pixels(tmp / "data" / "test/bee/t copy.png") == _pixels(tmp / "data" / FOUR[0])).all()


@pytest.mark.slow
def test_duplicates_off_writes_no_partner_columns(run: tuple[Path, Path]) -> None:
    tmp, _ = run
    folder = _run(tmp, "off")
    for name in ("suspects_seed0.csv", "suspects.csv"):
        columns = set(pd.read_csv(folder / name, nrows=1).columns)
        assert "file" in columns and not columns & {"duplicates", "duplicate_files", "duplicate_labels_differ"}
    assert not (folder / "duplicates.csv").exists()


def test_partner_files_follow_duplicates_numeric_order_past_nine() -> None:
    """Indices 2, 10 and 100 sort as numbers in both columns (as text, 10 < 100 < 2)."""
    pairs = pd.DataFrame({"a": [2, 10, 2], "b": [100, 100, 10], "distance": [0.1, 0.2, 0.3],
                          "label_a": [0, 0, 0], "label_b": [0, 1, 0]})
    files = [f"f{i}" for i in range(101)]
    columns = partner_columns(pairs, 101, files)
    assert columns["duplicates"][100] == "2;10" and json.loads(columns["duplicate_files"][100]) == ["f2", "f10"]
    assert columns["duplicates"][2] == "10;100" and json.loads(columns["duplicate_files"][2]) == ["f10", "f100"]
    for cell, index in zip(columns["duplicate_files"], columns["duplicates"]):
        assert json.loads(cell) == [files[int(i)] for i in index.split(";") if i]
