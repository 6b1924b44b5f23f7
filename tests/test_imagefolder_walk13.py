"""The image walkthrough's findings: images beside the class folders were dropped without a word,
and bad images were named one per run (fix one, rerun, meet the next); the size every image must
have was the first image's, so one odd first image made every other image "wrong"."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError


def _folder(root, sizes: dict[str, tuple[int, int]] | None = None, split: str = ""):
    base = root / split if split else root
    rng = np.random.default_rng(0)
    for c in "ab":
        (base / c).mkdir(parents=True)
        for i in range(4):
            name = f"{c}{i}.png"
            h, w = (sizes or {}).get(f"{c}/{name}", (8, 8))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / c / name)
    return base


def test_images_outside_every_class_folder_are_named(tmp_path) -> None:
    base = _folder(tmp_path / "d", split="train")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(base / "loose.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "d" / "beside.jpg")
    with pytest.warns(UserWarning) as caught:
        ds = load_dataset(f"imagefolder:{tmp_path / 'd'}", cache_dir=tmp_path / "cache")
    text = [str(w.message) for w in caught]
    assert ds.n_train == 8
    assert any("1 image(s) lie in it outside every class folder (e.g. ['loose.png'])" in t for t in text)
    assert any("(e.g. ['beside.jpg']) and are not used" in t for t in text)


def test_a_folder_of_class_folders_alone_gives_no_such_warning(tmp_path) -> None:
    _folder(tmp_path / "d")
    (tmp_path / "d" / ".DS_Store").write_bytes(b"x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(f"imagefolder:{tmp_path / 'd'}", cache_dir=tmp_path / "cache").n_train == 8


def test_every_bad_image_is_named_in_one_error(tmp_path) -> None:
    base = _folder(tmp_path / "d", sizes={"b/b3.png": (10, 12)})
    (base / "a" / "a1.png").write_bytes(b"not an image")
    (base / "b" / "b0.png").write_bytes(b"")
    with pytest.raises(HarnessError) as raised:
        load_dataset(f"imagefolder:{tmp_path / 'd'}", cache_dir=tmp_path / "cache")
    message = str(raised.value)
    assert message.startswith("3 images cannot be used: cannot decode image ")
    assert "a/a1.png" in message and "b/b0.png" in message and "b/b3.png is 12x10 but" in message
    assert message.endswith("remove or replace the files that cannot be decoded; all images of an imagefolder "
                            "dataset must have one size: resize it to 8x8 (PIL: img.resize((8, 8))) or remove it")


def test_the_size_is_the_most_common_one_not_the_first_images(tmp_path) -> None:
    _folder(tmp_path / "d", sizes={"a/a0.png": (16, 16)})  # the first file in order is the odd one
    with pytest.raises(HarnessError, match=r"^image \S+a/a0\.png is 16x16 but \S+a/a1\.png is 8x8; .*resize it to "
                                           r"8x8"):
        load_dataset(f"imagefolder:{tmp_path / 'd'}", cache_dir=tmp_path / "cache")
