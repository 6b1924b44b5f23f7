"""The file-safety walkthrough's findings: a name longer than file systems take ended in an
ENAMETOOLONG traceback (exit 1) from the first `exists()`, and a MEMPROX_CACHE inside an image
folder wrote decoded copies into the user's data, which the next run read as a class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.values import check_lengths, expand_home

FAST = ["run", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates", "0.1", "--epochs", "1",
        "--no-progress"]


@pytest.mark.parametrize("flag", ["--out", "--store", "--dataset"])
def test_a_name_too_long_is_one_error_line(tmp_path, capsys, flag: str) -> None:
    long = str(tmp_path / ("x" * 300))
    value = f"imagefolder:{long}" if flag == "--dataset" else long
    assert main([*FAST, flag, value, *([] if flag == "--out" else ["--out", str(tmp_path / "o")])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is 300 bytes long, and file systems take at most 255; pass a shorter one" in err[0]
    assert not (tmp_path / "o").exists()


def test_lengths_at_the_limits() -> None:
    check_lengths(expand_home("/tmp/" + "a" * 255, "--out"), "--out")  # 255 bytes: fine
    with pytest.raises(HarnessError, match="is 256 bytes long"):
        check_lengths(expand_home("/tmp/" + "a" * 256, "--out").parent / ("é" * 128), "--out")  # 2 bytes a letter
    with pytest.raises(HarnessError, match="paths of at most 4095"):
        expand_home("/" + "/".join(["b" * 200] * 21), "--store")


def test_a_cache_inside_the_image_folder_is_refused(tmp_path, monkeypatch) -> None:
    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 40, dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "imgs" / ".cache"))
    with pytest.raises(HarnessError, match=r"cache .*\.cache \(MEMPROX_CACHE\) is inside the image folder"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["a", "b"]  # nothing written into the data
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    assert load_dataset(f"imagefolder:{tmp_path / 'imgs'}").n_train == 6


@pytest.mark.parametrize("value", ["o_sp ", " o_sp", "o_sp\n"])
def test_white_space_at_an_end_of_a_path_is_refused(tmp_path, capsys, value: str) -> None:
    # MEMPROX_CACHE refused it already; --out "o_sp " made a folder whose name ends in a space
    assert main([*FAST, "--out", str(tmp_path) + "/" + value]) == 2
    assert "has white space at an end of a name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
