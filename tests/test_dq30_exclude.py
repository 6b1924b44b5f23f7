"""`imagefolder:PATH,exclude=FILE` (dq30): a user who confirmed suspects, or keeps rejected images in a
subfolder (`cat/rejected/`, which was trained on as `cat`), had no way to train without them short of
changing or copying the folder. The exclusion must give exactly the dataset of the folder with those
files deleted (same samples, same fingerprint, so the same stored runs), and a line that matches
nothing must be an error, not an image silently kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError


def _folder(root: Path, test: bool = False) -> Path:
    """train/{cat,dog}/ 4 images each, cat/rejected/ 2 more, optionally test/{cat,dog}/ 2 each."""
    rng = np.random.default_rng(7)
    layout = {"train/cat": 4, "train/cat/rejected": 2, "train/dog": 4, "train/dog/sub dir": 1}
    if test:
        layout |= {"test/cat": 2, "test/dog": 2}
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{folder.split('/')[-1][:3]}_{i}.png")
    return root


def _load(spec: str, cache: Path):
    return load_dataset(f"imagefolder:{spec}", cache_dir=cache)


def test_excluded_file_and_subfolder_give_the_folder_without_them(tmp_path) -> None:
    mine = _folder(tmp_path / "mine")
    drop = tmp_path / "drop.txt"
    drop.write_text("# confirmed suspects\ntrain/dog/dog_1.png\n\n./train/cat/rejected/\n")
    kept = _load(f"{mine},exclude={drop}", tmp_path / "cache")
    pruned = tmp_path / "pruned"
    shutil.copytree(mine, pruned)
    (pruned / "train/dog/dog_1.png").unlink()
    shutil.rmtree(pruned / "train/cat/rejected")
    expected = _load(str(pruned), tmp_path / "cache2")
    full = _load(str(mine), tmp_path / "cache3")
    assert kept.sample_names == expected.sample_names
    assert kept.sample_names == ("train/cat/cat_0.png", "train/cat/cat_1.png", "train/cat/cat_2.png",
                                 "train/cat/cat_3.png", "train/dog/dog_0.png", "train/dog/dog_2.png",
                                 "train/dog/dog_3.png", "train/dog/sub dir/sub_0.png")
    assert kept.n_train == 8 and full.n_train == 11
    assert np.array_equal(kept.x_train.numpy(), expected.x_train.numpy())
    assert kept.y_train.tolist() == expected.y_train.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert kept.fingerprint == expected.fingerprint != full.fingerprint


def test_patterns_match_whole_paths_in_both_splits(tmp_path) -> None:
    mine = _folder(tmp_path / "mine", test=True)
    drop = tmp_path / "drop.txt"
    drop.write_text("*/rejected\ntest/dog/dog_?.png\ntrain/dog/sub dir\n")
    ds = _load(f"{mine},exclude={drop}", tmp_path / "cache")
    assert ds.n_train == 8
    assert not any("rejected" in n or "sub dir" in n for n in ds.sample_names)
    assert ds.test_sample_names == ("test/cat/cat_0.png", "test/cat/cat_1.png")


@pytest.mark.parametrize("line, words", [
    ("train/dog/dog_9.png", "match no image"),
    ("cat/cat_0.png", "match no image"),  # missing train/: relative to PATH, as `file` writes it
    ("/abs/train/cat/cat_0.png", "is not a path relative to the dataset folder"),
    ("train/../train/cat/cat_0.png", "is not a path relative to the dataset folder"),
])
def test_a_line_that_excludes_nothing_is_an_error_naming_it(tmp_path, line, words) -> None:
    mine = _folder(tmp_path / "mine")
    drop = tmp_path / "drop.txt"
    drop.write_text(f"train/cat/cat_0.png\n{line}\n")
    with pytest.raises(HarnessError, match=words) as caught:
        _load(f"{mine},exclude={drop}", tmp_path / "cache")
    assert line.lstrip("/") in str(caught.value) or line in str(caught.value)
    assert str(drop) in str(caught.value)


def test_bad_exclude_values(tmp_path) -> None:
    mine = _folder(tmp_path / "mine")
    with pytest.raises(HarnessError, match=r"exclude file .*nope.txt does not exist"):
        _load(f"{mine},exclude={tmp_path / 'nope.txt'}", tmp_path / "cache")
    with pytest.raises(HarnessError, match="is a folder"):
        _load(f"{mine},exclude={tmp_path}", tmp_path / "cache")
    with pytest.raises(HarnessError, match="exclude= needs a file"):
        _load(f"{mine},exclude=", tmp_path / "cache")
    with pytest.raises(HarnessError, match="no space after the comma"):
        _load(f"{mine}, exclude=x.txt", tmp_path / "cache")


def test_excluding_a_whole_class_names_the_exclude_file(tmp_path) -> None:
    mine = _folder(tmp_path / "mine")
    drop = tmp_path / "drop.txt"
    drop.write_text("train/dog\n")
    with pytest.raises(HarnessError, match=r"classes \['dog'\]\) never occur.*lines of .*drop.txt"):
        _load(f"{mine},exclude={drop}", tmp_path / "cache")


def test_a_folder_with_a_comma_in_its_name_still_loads(tmp_path) -> None:
    mine = _folder(tmp_path / "a,b")
    assert _load(str(mine), tmp_path / "cache").n_train == 11
    drop = tmp_path / "drop.txt"
    drop.write_text("train/cat/rejected\n")
    assert _load(f"{mine},exclude={drop}", tmp_path / "cache").n_train == 9


def test_cli_refuses_a_bad_exclude_line_without_a_traceback(tmp_path) -> None:
    mine = _folder(tmp_path / "mine")
    drop = tmp_path / "drop.txt"
    drop.write_text("train/cat/typo.png\n")
    env = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--dataset", f"imagefolder:{mine},exclude={drop}",
                           "--tasks", "suspects", "--proxies", "csl", "--seeds", "1", "--epochs", "1",
                           "--out", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "train/cat/typo.png" in proc.stderr and "match no image" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_byte_order_mark_and_decomposed_accents_still_match(tmp_path) -> None:
    """Notepad writes a BOM before the first line, and a folder copied from macOS names `é` as `e` +
    U+0301 while the user types U+00E9: both lines named the image, and were refused as matching none."""
    mine = _folder(tmp_path / "mine")
    nfd = "caf\u0065\u0301.png"
    shutil.copy(mine / "train/cat/cat_0.png", mine / "train/cat" / nfd)
    drop = tmp_path / "drop.txt"
    drop.write_bytes("\ufefftrain/cat/rejected\r\ntrain/cat/caf\u00e9.png\r\n".encode())
    ds = _load(f"{mine},exclude={drop}", tmp_path / "cache")
    assert ds.n_train == 9
    assert not any("rejected" in n or "caf" in n for n in ds.sample_names)


def test_a_line_that_matches_nothing_is_refused_before_any_image_is_decoded(tmp_path) -> None:
    """The check ran after both splits were decoded (100 s for 50,000 JPEGs on a first load): a typo
    was reported only then, or a bad image's error came first and hid it."""
    mine = _folder(tmp_path / "mine", test=True)
    (mine / "train/dog/dog_0.png").write_bytes(b"not a png")
    drop = tmp_path / "drop.txt"
    drop.write_text("train/dog/dog_O.png\n")  # a letter O for the zero
    with pytest.raises(HarnessError, match=r"match no image .*\['train/dog/dog_O.png'\]"):
        _load(f"{mine},exclude={drop}", tmp_path / "cache")
    assert not (tmp_path / "cache" / "datasets").exists() or not list((tmp_path / "cache" / "datasets").glob("*.npy"))


def test_excluding_every_training_image_says_so(tmp_path) -> None:
    mine = _folder(tmp_path / "mine")
    drop = tmp_path / "drop.txt"
    drop.write_text("train\n")
    with pytest.raises(HarnessError) as caught:
        _load(f"{mine},exclude={drop}", tmp_path / "cache")
    assert f"no images (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp) under {mine / 'train'} but those " \
           f"{drop} excludes; expected {mine / 'train'}/<class>/<image>" in str(caught.value)
