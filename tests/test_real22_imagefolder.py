"""imagefolder: on the odd files a user's own folder holds (tag real22): every image is a sample,
refused with a message naming it, or skipped with a warning that counts it; none dropped unsaid."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError


def _folder(root: Path) -> Path:
    """Two classes of three 8x8 RGB PNGs, each a different colour."""
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 10 * (3 * c + i), np.uint8)).save(root / cls / f"{cls}{i}.png")
    return root


def _load(root: Path, cache: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    return ds, [str(w.message) for w in caught]


def test_a_hidden_image_is_skipped_with_a_warning_that_counts_it(tmp_path: Path) -> None:
    """`.x.png` was dropped without a word: 6 samples of the 7 images, and nothing said so."""
    root = _folder(tmp_path / "ds")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "a" / ".x.png", "PNG")
    Image.fromarray(np.full((8, 8, 3), 210, np.uint8)).save(root / "b" / ".y.JPG", "JPEG")
    (root / "a" / ".DS_Store").write_bytes(b"x")  # not named like an image: not counted
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.n_train == 6 and ".x.png" not in " ".join(ds.sample_names or ())
    hidden = [m for m in caught if "hidden image" in m]
    assert len(hidden) == 1 and "skipped 2 hidden image file(s)" in hidden[0], caught
    assert ".x.png" in hidden[0] and ".y.JPG" in hidden[0]


def test_macos_metadata_beside_its_image_is_not_counted(tmp_path: Path) -> None:
    """`._a0.png` beside `a0.png` is macOS's resource fork of that image, not a sample: no warning."""
    root = _folder(tmp_path / "ds")
    (root / "a" / "._a0.png").write_bytes(b"\x00\x05\x16\x07")
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.n_train == 6 and not [m for m in caught if "hidden" in m], caught


def test_odd_but_readable_images_are_all_samples(tmp_path: Path) -> None:
    """Alpha, gray and upper-case extensions are samples: RGBA loses its alpha, gray is widened to RGB."""
    root = _folder(tmp_path / "ds")
    Image.fromarray(np.full((8, 8, 4), 77, np.uint8), "RGBA").save(root / "a" / "alpha.png")
    Image.fromarray(np.full((8, 8), 55, np.uint8), "L").save(root / "b" / "gray.png")
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(root / "b" / "UP.PNG", "PNG")
    ds, _ = _load(root, tmp_path / "cache")
    names = list(ds.sample_names or ())
    assert ds.n_train == 9 and tuple(ds.x_train.shape[1:]) == (3, 8, 8)
    assert {"a/alpha.png", "b/gray.png", "b/UP.PNG"} <= set(names)
    assert ds.x_train[names.index("a/alpha.png")].unique().tolist() == [77]
    assert ds.x_train[names.index("b/gray.png")].unique().tolist() == [55]
    assert ds.y_train[names.index("b/UP.PNG")].item() == 1


@pytest.mark.parametrize("case, message", [
    ("truncated", r"cannot decode image .*t\.jpg"),
    ("size", r"big\.png is 8x9 .* resize it to 8x8"),
    ("empty", r"class id\(s\) \[2\] \(classes \['c'\]\) never occur"),
])
def test_bad_files_are_refused_naming_them(tmp_path: Path, case: str, message: str) -> None:
    root = _folder(tmp_path / "ds")
    if case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).save(root / "a" / "t.jpg")
        data = (root / "a" / "t.jpg").read_bytes()
        (root / "a" / "t.jpg").write_bytes(data[: len(data) // 2])
    elif case == "size":
        Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "a" / "big.png")
    else:
        (root / "c").mkdir()
    with pytest.raises(HarnessError, match=message):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
