"""attex30: `imagefolder:PATH,exclude=FILE` attacked as a user meets it. A line copied from the suspects
CSV's `file` column must leave out exactly that image: a name holding `[1]` was also a pattern, and left
out a second image without a word."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError

_FILES = ("train/cat/img1.png", "train/cat/img[1].png", "train/cat/img2.png", "train/dog/3.png", "train/dog/4.png",
          "test/cat/5.png", "test/dog/6.png")


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for rel in _FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / rel)
    return root


def _names(tmp_path: Path, lines: str) -> tuple[str, ...]:
    folder = _folder(tmp_path / "d")
    drop = tmp_path / "drop.txt"
    drop.write_text(lines, encoding="utf-8")
    with pytest.warns(UserWarning, match="integer file stems"):  # img1/img2 beside 3/4: not this test's subject
        ds = load_dataset(f"imagefolder:{folder},exclude={drop}", cache_dir=tmp_path / "cache")
    return ds.sample_names


def test_a_name_with_brackets_leaves_out_that_image_only(tmp_path) -> None:
    assert _names(tmp_path, "train/cat/img[1].png\n") == (
        "train/cat/img1.png", "train/cat/img2.png", "train/dog/3.png", "train/dog/4.png")


def test_a_pattern_that_names_no_file_is_still_a_pattern(tmp_path) -> None:
    assert _names(tmp_path, "train/cat/img[12].png\n") == ("train/cat/img[1].png", "train/dog/3.png", "train/dog/4.png")


@pytest.mark.parametrize("line", ["train//cat/img2.png", "train/./cat/img2.png", "./train/cat//img2.png",
                                  "train/cat/img2.png \r", "\ufefftrain/cat/img2.png"])
def test_spellings_of_one_path_name_that_image(tmp_path, line) -> None:
    assert _names(tmp_path, line + "\n") == (
        "train/cat/img1.png", "train/cat/img[1].png", "train/dog/3.png", "train/dog/4.png")


def test_a_relative_exclude_file_beside_the_images_names_where_it_was_looked_for(tmp_path, monkeypatch) -> None:
    folder = _folder(tmp_path / "d")
    (folder / "drop.txt").write_text("train/cat/img2.png\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError, match=r"relative to the current folder .*not to the dataset folder: pass "
                                           rf"exclude={os.path.join(folder, 'drop.txt')}"):
        load_dataset(f"imagefolder:{folder},exclude=drop.txt", cache_dir=tmp_path / "cache")


def test_a_lone_dot_line_is_refused_as_no_path(tmp_path) -> None:
    folder = _folder(tmp_path / "d")
    (tmp_path / "drop.txt").write_text("# all\n./\n")
    with pytest.raises(HarnessError, match="line 2 of .* is not a path relative"):
        load_dataset(f"imagefolder:{folder},exclude={tmp_path / 'drop.txt'}", cache_dir=tmp_path / "cache")


def test_lines_that_name_images_are_looked_up_not_matched_one_by_one(tmp_path, monkeypatch) -> None:
    """2,000 confirmed suspects over CIFAR-10's 50,000 images were 4 x 10^8 pattern matches: 5 minutes of
    listing in every process that loads the data. A line without `*`, `?`, `[` is a name: no match is tried."""
    import fnmatch

    from harness.datasets import imagefolder_exclude

    calls = []
    real = fnmatch.fnmatchcase
    monkeypatch.setattr(imagefolder_exclude.fnmatch, "fnmatchcase", lambda n, p: calls.append(p) or real(n, p))
    drop = tmp_path / "drop.txt"
    drop.write_text("".join(f"train/c{i % 10}/{i:05d}.png\n" for i in range(0, 50_000, 25)) + "train/c3/00[0-4]*.png\n")
    exclusions = imagefolder_exclude.read_exclusions("imagefolder:x", drop, tmp_path)
    kept = [i for i in range(1_000) if not exclusions.excludes(f"train/c{i % 10}/{i:05d}.png")]
    assert len(kept) == 1_000 - 40 - 50  # 40 listed (every 25th), 50 of class 3 below 500 (none listed)
    assert set(calls) == {"train/c3/00[0-4]*.png"}
    assert len(calls) == 1_000 * 3 - 2 * 50  # the pattern against each image and its two folders (a hit stops)


@pytest.mark.parametrize("option", [",Exclude={t}/drop.txt", ",exclude={t}/drop.txt,exclude={t}/more.txt",
                                    ",  EXCLUDE={t}/drop.txt"])
def test_a_misspelt_or_repeated_option_says_how_it_is_written(tmp_path, option) -> None:
    folder = _folder(tmp_path / "d")
    for name in ("drop.txt", "more.txt"):
        (tmp_path / name).write_text("train/cat/img2.png\n")
    option = option.format(t=tmp_path)
    with pytest.raises(HarnessError, match=r"does not exist \(the option follows the path once, as ,exclude=FILE: "
                                           r"lowercase, no space after the comma\)"):
        load_dataset(f"imagefolder:{folder}{option}", cache_dir=tmp_path / "cache")


def test_a_missing_relative_exclude_file_is_named_where_it_was_looked_for(tmp_path, monkeypatch) -> None:
    folder = _folder(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError, match=rf"exclude file lists/drop.txt \({tmp_path / 'lists/drop.txt'}\) does "
                                           r"not exist; pass"):
        load_dataset(f"imagefolder:{folder},exclude=lists/drop.txt", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("subset", [None, 2])
def test_an_undecodable_image_left_out_is_never_read(tmp_path, subset) -> None:
    """The way out for a folder you may not change: a file that does not decode (or claims 400 million pixels)
    listed in the exclude file is not read, and the data are those of the folder without it."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    folder = _folder(tmp_path / "d")
    (folder / "train/dog/5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    (folder / "test/dog/7.png").write_bytes(b"not an image")
    drop = tmp_path / "drop.txt"
    drop.write_text("train/dog/5.png\ntest/dog/7.png\n")
    ds = load_dataset(f"imagefolder:{folder},exclude={drop}", subset=subset, cache_dir=tmp_path / "cache")
    assert ds.full_train_size == 5 and ds.n_train == (subset or 5)
    assert ds.sample_names == ("train/cat/img1.png", "train/cat/img2.png", "train/cat/img[1].png", "train/dog/3.png",
                               "train/dog/4.png")[:subset]
    assert ds.test_sample_names == ("test/cat/5.png", "test/dog/6.png")
