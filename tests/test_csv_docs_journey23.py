"""docs/datasets.md's CSV example on the files a data-quality engineer has (journey23). The example
converted the label column with `to_numpy(dtype=str)`: under pandas 3 a text column with an empty
cell became one-character strings, so 'barolo' and 'barbera' were one class 'b', silently. Each test
runs the page's block as written on a CSV of its own in place of the stand-in lines."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
MARKER = "<!-- csv-example -->"
#: The block's lines that write the stand-in CSV; the tests write theirs instead.
STAND_IN = ("stands in for your CSV", 'to_csv("mine.csv"')
NAMES = ["barolo", "barbera", "grignolino"]


def _block() -> str:
    text = PAGE.read_text(encoding="utf-8")
    assert MARKER in text, f"docs/datasets.md lost its {MARKER} line"
    found = re.search(r"```python\n(.*?)^```", text[text.index(MARKER):], re.M | re.S)
    assert found, "no python block after the CSV example's marker"
    lines = found.group(1).splitlines()
    for part in STAND_IN:
        assert sum(part in line for line in lines) == 1, f"the CSV example no longer has the line with {part!r}"
    return "\n".join(line for line in lines if not any(part in line for part in STAND_IN))


def _write_csv(folder: Path, labels: list[str]) -> None:
    rows = [f"{i}.5,{(7 * i) % 5}.25,{label}" for i, label in enumerate(labels)]
    (folder / "mine.csv").write_text("\n".join(["alcohol,hue,diagnosis", *rows]) + "\n", encoding="utf-8")


def _run(folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MEMPROX_CACHE", str(folder / "cache"))
    exec(compile(_block(), str(PAGE), "exec"), {"__name__": "__main__"})


def test_the_example_keeps_every_class_name_whole(tmp_path: Path, monkeypatch, capsys) -> None:
    _write_csv(tmp_path, [NAMES[i % 3] for i in range(12)])
    _run(tmp_path, monkeypatch)
    saved = np.load(tmp_path / "mine.npz")
    assert saved["classes"].tolist() == sorted(NAMES)
    assert saved["y"].tolist() == [sorted(NAMES).index(NAMES[i % 3]) for i in range(12)]
    assert saved["x"].shape == (12, 2) and saved["x"][3].tolist() == [3.5, 1.25]
    assert capsys.readouterr().out.rstrip().endswith(str(sorted(NAMES)))


def test_an_empty_label_cell_stops_the_example_naming_its_rows(tmp_path: Path, monkeypatch) -> None:
    """Before: under pandas 3 the classes were ['b', 'g', 'n'] (barolo and barbera merged, the
    empty cell a class 'n'), saved without a word; under pandas 2 'nan' was one more class."""
    labels = [NAMES[i % 3] for i in range(12)]
    labels[4] = labels[9] = ""
    _write_csv(tmp_path, labels)
    with pytest.raises(SystemExit) as stopped:
        _run(tmp_path, monkeypatch)
    assert str(stopped.value) == "rows without a label (0 = the first after the header): [4 9]"
    assert not (tmp_path / "mine.npz").exists()
