"""The suspects CSVs name each sample's copies by file (`duplicate_files`, a JSON list), not only by
index (`duplicates`): a data-quality engineer opens the copies from the row, without looking each
index up. Before, only indices were written (dq31). A file name may hold `;`, `,`, quotes, spaces,
a newline and any non-ASCII character, so the list is JSON, which `json.loads` reads back exactly
from `pandas.read_csv`'s cell."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.tasks.suspects_pairs import partner_columns, partner_files

#: Groups of byte-equal images, by (class folder, file name); every other image is random noise.
GROUPS = [
    [("ant", "orig one.png"), ("ant", "a;b,c.png"), ("bee", 'say "hi".png')],
    [("bee", "café ünï 日本.png"), ("cat", "new\nline.png")],
    [("cat", unicodedata.normalize("NFD", "é ,;.png")), ("cat", "plain.png")],
]


def _folder(root: Path) -> dict[str, bytes]:
    """Three class folders of 16 random 8 x 8 RGB images each plus the planted groups: {file: pixels}."""
    rng = np.random.default_rng(31)
    written: dict[str, bytes] = {}

    def save(cls: str, name: str, pixels: np.ndarray) -> None:
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / cls / name)
        written[f"{cls}/{name}"] = pixels.tobytes()

    for cls in ("ant", "bee", "cat"):
        for i in range(16):
            save(cls, f"r{i:02d}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for group in GROUPS:
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        for cls, name in group:
            save(cls, name, pixels)
    return written


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    from harness.api import run_experiment

    tmp = tmp_path_factory.mktemp("dq31_files")
    written = _folder(tmp / "data")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEMPROX_CACHE", str(tmp / "cache"))
    try:
        run_experiment(dataset=f"imagefolder:{tmp / 'data'}", model="mlp", proxies="final_loss", tasks="suspects",
                       seeds=2, epochs=1, out=tmp / "out", store=tmp / "store", executor="inprocess",
                       progress=False, task_args={"suspects": {"k": 4}})
    finally:
        mp.undo()
    return tmp / "out" / "suspects", written


@pytest.mark.parametrize("name", ["suspects_seed0.csv", "suspects_seed1.csv", "suspects.csv"])
def test_duplicate_files_read_back_with_read_csv_and_json_loads_are_the_copies(outputs, name: str) -> None:
    folder, written = outputs
    table = pd.read_csv(folder / name)  # pandas' defaults, as a reader would
    assert list(table.columns[table.columns.get_loc("duplicates"):][:3]) == [
        "duplicates", "duplicate_files", "duplicate_labels_differ"]
    by_index = dict(zip(table["index"], table["file"]))
    assert sorted(by_index.values()) == sorted(written)  # every file named exactly, newline and NFD kept
    for row in table.itertuples():
        files = json.loads(row.duplicate_files)
        index = [] if pd.isna(row.duplicates) else [int(i) for i in str(row.duplicates).split(";")]
        assert files == [by_index[i] for i in index]  # the same partners, in the same order
        # independent: each listed file has exactly this sample's pixels
        assert all(written[f] == written[row.file] for f in files)
    # the first copy of each group (by index) lists every other file of the group
    for group in GROUPS:
        names = [f"{cls}/{n}" for cls, n in group]
        index = sorted(table.loc[table["file"].isin(names), "index"])
        first = table.loc[table["index"] == index[0], "duplicate_files"].item()
        assert json.loads(first) == [by_index[i] for i in index[1:]]
        assert set(json.loads(first)) == set(names) - {by_index[index[0]]}
    listed = table.loc[table["duplicate_files"] != "[]", "file"]
    assert sorted(listed) == sorted(f"{cls}/{n}" for group in GROUPS for cls, n in group)


def test_duplicates_csv_names_the_same_pairs(outputs) -> None:
    folder, _ = outputs
    pairs = pd.read_csv(folder / "duplicates.csv")
    table = pd.read_csv(folder / "suspects_seed0.csv")
    from_rows = {(f, g) for f, cell in zip(table["file"], table["duplicate_files"]) for g in json.loads(cell)}
    assert from_rows == set(zip(pairs["file_a"], pairs["file_b"])) | set(zip(pairs["file_b"], pairs["file_a"]))
    assert len(pairs) == 4  # 2 + 1 + 1: copies pair with the first copy of their group


def test_without_files_there_is_no_duplicate_files_column(make_config) -> None:
    from harness.experiment import Experiment

    exp = Experiment(make_config(tasks=("suspects",), seeds=(0, 1), epochs=1, task_args={"suspects": {"k": 4}}))
    exp.run()
    folder = Path(exp.cfg.out) / "suspects"
    for name in ("suspects_seed0.csv", "suspects.csv"):
        columns = list(pd.read_csv(folder / name, nrows=1).columns)
        assert "duplicates" in columns and "duplicate_files" not in columns and "file" not in columns


def test_partner_files_escape_what_a_separator_cannot() -> None:
    names = ['a;b', 'c,d', 'e"f', 'g h', 'ü\nß', "[x]", "'", "\\"]
    partners = [[1, 2, 3, 4, 5, 6, 7], [0], [], [], [], [], [], []]
    cells = partner_files(partners, names)
    assert [json.loads(c) for c in cells] == [names[1:], [names[0]], [], [], [], [], [], []]
    assert "\n" not in cells[0] and "ü" in cells[0]  # escaped newline; non-ASCII as itself
    pairs = pd.DataFrame({"a": [0, 0], "b": [2, 1], "distance": [0.0, 0.0], "label_a": [0, 0], "label_b": [0, 1]})
    columns = partner_columns(pairs, 3, ["x", "y", "z"])
    assert list(columns) == ["duplicates", "duplicate_files", "duplicate_labels_differ"]
    assert columns["duplicates"] == ["1;2", "0", "0"] and columns["duplicate_files"] == ['["y", "z"]', '["x"]', '["x"]']
    assert list(partner_columns(pairs, 3)) == ["duplicates", "duplicate_labels_differ"]
