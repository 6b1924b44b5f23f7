"""attex30: one exclude file spelt `drop.txt`, `./drop.txt` or `lists//drop.txt` is one dataset name, so one
experiment for --out: a rerun with `./` was refused as "another experiment" on its own output folder."""

from __future__ import annotations

import pytest

from harness.api import build_config
from harness.config_identity import experiment_id
from harness.values import parse_dataset


@pytest.mark.parametrize(("given", "want"), [
    ("imagefolder:/d,exclude=./drop.txt", "imagefolder:/d,exclude=drop.txt"),
    ("imagefolder:/d/,exclude=lists//./drop.txt", "imagefolder:/d,exclude=lists/drop.txt"),
    ("imagefolder:/d,exclude=/a//drop.txt", "imagefolder:/d,exclude=/a/drop.txt"),
    ("imagefolder:/d,exclude=../drop.txt", "imagefolder:/d,exclude=../drop.txt"),  # a link makes .. another folder
    ("imagefolder:/d,exclude=~/drop.txt", "imagefolder:/d,exclude=~/drop.txt"),
    ("imagefolder:/d,exclude=", "imagefolder:/d,exclude="),  # refused by the loader, naming the fix
])
def test_spellings_of_one_exclude_file_are_one_name(given: str, want: str) -> None:
    assert parse_dataset(given) == want


def test_one_exclude_file_is_one_experiment_for_out(tmp_path) -> None:
    ids = {experiment_id(build_config(dataset=f"imagefolder:/d{slash},exclude={f}", tasks=("suspects",),
                                      out=tmp_path / "out"))
           for f in ("drop.txt", "./drop.txt", ".//drop.txt") for slash in ("", "/")}
    other = experiment_id(build_config(dataset="imagefolder:/d,exclude=other.txt", tasks=("suspects",),
                                       out=tmp_path / "out"))
    assert len(ids) == 1 and other not in ids
