"""attex30: an exclude file edited between runs. Edits that keep the set of images left out (order,
comments, blank lines, CRLF, a byte-order mark, trailing spaces, `./`, `//`, a folder's trailing `/`, a
pattern for the names) keep the dataset (same samples, same fingerprint: the same stored runs); a line
added or removed is another dataset, and the edit undone is the first one again."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset

_CAFE = unicodedata.normalize("NFD", "café")  # as a folder copied from a Mac names it
_FILES = ("train/cat/a.png", "train/cat/b.png", "train/cat/old/c.png", "train/cat/old/d.png", "train/dog/e.png",
          f"train/dog/{_CAFE}.png", "train/dog/f.png", "test/cat/g.png", "test/dog/h.png")
_LEFT_OUT = ("train/cat/old/c.png", "train/cat/old/d.png", f"train/dog/{_CAFE}.png", "test/dog/h.png")
_SAME = {
    "plain": "train/cat/old\ntrain/dog/café.png\ntest/dog/h.png\n",
    "reordered, commented": "# checked 5 Dec\n\ntest/dog/h.png\n   \ntrain/dog/café.png\n# old shots\n"
                            "train/cat/old\n",
    "crlf, bom, spaces": "\ufefftrain/cat/old/  \r\n  train/dog/café.png\r\ntest/dog/h.png\t\r\n",
    "dots, double slashes": "./train/cat/old/\ntrain//dog/./café.png\n./test/dog//h.png\n",
    "each image of the folder": "train/cat/old/c.png\ntrain/cat/old/d.png\ntrain/dog/café.png\ntest/dog/h.png\n",
    "patterns": "*/old\ntrain/dog/caf?.png\ntest/*/h.png\n",
    "nfd lines, repeated": f"train/cat/old\ntrain/cat/old/c.png\ntrain/dog/{_CAFE}.png\ntest/dog/h.png\n"
                           "test/dog/h.png\n",
}


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for rel in _FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / rel)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """The folder, and a copy of it with the images `_LEFT_OUT` deleted (the dataset each exclusion must give)."""
    tmp = tmp_path_factory.mktemp("edits")
    folder = _folder(tmp / "d")
    pruned = tmp / "pruned"
    shutil.copytree(folder, pruned)
    for rel in _LEFT_OUT:
        (pruned / rel).unlink()
    return folder, pruned


def _load(spec: str, cache: Path):
    return load_dataset(f"imagefolder:{spec}", cache_dir=cache)


def test_edits_that_keep_the_set_keep_the_dataset(folders, tmp_path) -> None:
    folder, pruned = folders
    want = _load(str(pruned), tmp_path / "cache0")
    assert len(want.sample_names) == 4 and want.test_sample_names == ("test/cat/g.png",)
    for i, (what, text) in enumerate(_SAME.items()):
        drop = tmp_path / f"drop{i}.txt"
        drop.write_bytes(text.encode())
        got = _load(f"{folder},exclude={drop}", tmp_path / f"cache{i + 1}")
        assert (got.fingerprint, got.sample_names, got.test_sample_names) == (
            want.fingerprint, want.sample_names, want.test_sample_names), what
        assert np.array_equal(got.x_train.numpy(), want.x_train.numpy()), what


def test_a_line_added_or_removed_is_another_dataset_and_undoing_it_the_first(folders, tmp_path) -> None:
    folder, _ = folders
    drop = tmp_path / "drop.txt"
    cache = tmp_path / "cache"  # one cache: the stat-keyed digest must not serve the previous list's
    drop.write_text(_SAME["plain"])
    first = _load(f"{folder},exclude={drop}", cache)
    drop.write_text(_SAME["plain"] + "train/cat/b.png\n")
    added = _load(f"{folder},exclude={drop}", cache)
    drop.write_text("train/cat/old\ntest/dog/h.png\n")
    removed = _load(f"{folder},exclude={drop}", cache)
    drop.write_text(_SAME["plain"])
    again = _load(f"{folder},exclude={drop}", cache)
    assert len({first.fingerprint, added.fingerprint, removed.fingerprint}) == 3
    assert again.fingerprint == first.fingerprint
    assert added.sample_names == tuple(n for n in first.sample_names if n != "train/cat/b.png")
    assert unicodedata.normalize("NFC", removed.sample_names[-1]) == "train/dog/f.png"
    assert len(removed.sample_names) == len(first.sample_names) + 1
