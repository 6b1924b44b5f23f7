"""`--out` inside an image folder read with `,exclude=` is refused like one inside a plain image folder: the
data path was `/d,exclude=x`, so the check never fired, the figures went into the folder and the next load took
their folder for a class."""

from __future__ import annotations

import pytest

from harness.api import build_config
from harness.config import data_folders
from harness.errors import HarnessError
from harness.outputs import check_out


def test_the_folder_is_the_data_path(tmp_path) -> None:
    cfg = build_config(dataset=f"imagefolder:{tmp_path / 'd'},exclude={tmp_path / 'x.txt'}", tasks=("suspects",),
                       out=tmp_path / "d" / "res")
    assert data_folders(cfg) == (tmp_path / "d",)


def test_an_out_inside_it_is_refused(tmp_path) -> None:
    (tmp_path / "d" / "cat").mkdir(parents=True)
    cfg = build_config(dataset=f"imagefolder:{tmp_path / 'd'},exclude={tmp_path / 'x.txt'}", tasks=("suspects",),
                       out=tmp_path / "d" / "res")
    with pytest.raises(HarnessError, match="inside"):
        check_out(tmp_path / "d" / "res", "id", False, tmp_path / "store", data_paths=data_folders(cfg))
