"""A data-quality engineer's own data, following only the docs (journey 6): tabular `npz:` files
written from a CSV, and an image folder of her own with the usual mess in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError


def _digit_pixels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (N, 1, 8, 8) pixels on 0..255, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * 255 / 16).round().astype(np.uint8)[:, None], digits.target


@pytest.mark.parametrize("scale", ["standardized", "16-bit"])
def test_npz_uint8_x_beside_floats_on_another_scale_is_refused(tmp_path: Path, scale: str) -> None:
    """uint8 x with a standardized (or 16-bit) float x_test was accepted and trained on: test
    accuracy 0.10 on digits, against 0.90 with the same pixels as uint8."""
    x, y = _digit_pixels()
    test = x[1500:].astype(np.float32)
    test = (test - test.mean()) / test.std() if scale == "standardized" else test * 257
    np.savez(tmp_path / "d.npz", x=x[:1500], y=y[:1500], x_test=test, y_test=y[1500:])
    with pytest.raises(HarnessError, match=r"x in uint8 \(0\.\.255\) but x_test in floats from .* outside 0\.\.255"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    np.savez(tmp_path / "e.npz", x=test, y=y[1500:], x_test=x[:1500], y_test=y[:1500])  # the other way round
    with pytest.raises(HarnessError, match=r"x_test in uint8 \(0\.\.255\) but x in floats from .* outside 0\.\.255"):
        load_dataset(f"npz:{tmp_path / 'e.npz'}")


def test_npz_uint8_x_keeps_images_when_x_test_holds_whole_pixel_floats(tmp_path: Path) -> None:
    """The training split decides: uint8 x stays images (figures, augmentation) when x_test holds the
    same pixels as floats; before, both became float features."""
    x, y = _digit_pixels()
    np.savez(tmp_path / "d.npz", x=x[:1500], y=y[:1500], x_test=x[1500:].astype(np.float64), y_test=y[1500:])
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.x_train.dtype == torch.uint8 and ds.x_test.dtype == torch.uint8 and ds.is_image
    assert np.array_equal(ds.x_test.numpy(), x[1500:])
    np.savez(tmp_path / "h.npz", x=x[:1500], y=y[:1500], x_test=np.minimum(x[1500:] + 0.5, 255.0), y_test=y[1500:])
    whole = r"not whole pixel values \(first: sample 0\).*round\(\)\.astype\(np\.uint8\)"
    with pytest.raises(HarnessError, match=whole):
        load_dataset(f"npz:{tmp_path / 'h.npz'}")


def test_npz_float_x_keeps_features_beside_uint8_x_test_on_its_scale(tmp_path: Path) -> None:
    """Float x on the pixel scale beside uint8 x_test: both float (x's dtype decides), values kept."""
    x, y = _digit_pixels()
    np.savez(tmp_path / "d.npz", x=x[:1500].astype(np.float32), y=y[:1500], x_test=x[1500:], y_test=y[1500:])
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.x_train.dtype == torch.float32 and ds.x_test.dtype == torch.float32
    assert np.array_equal(ds.x_test.numpy(), x[1500:].astype(np.float32))


def test_imagefolder_size_error_names_the_file_and_the_fix(tmp_path: Path) -> None:
    """An image of another size is refused naming it, and now saying what to do."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / cls / f"{cls}{i}.png")
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "b" / "big one.png")
    with pytest.raises(HarnessError, match=r"b/big one\.png is 12x10 .* resize it to 8x8 .* or remove it"):
        load_dataset(f"imagefolder:{tmp_path}", cache_dir=tmp_path.parent / f"{tmp_path.name}-cache")


def test_npz_text_labels_say_how_to_keep_the_class_names(tmp_path: Path) -> None:
    """A CSV's label column saved as is (text) was told to `y.astype(np.int64)`, which fails on text."""
    np.savez(tmp_path / "t.npz", x=np.arange(8.0).reshape(4, 2), y=np.array(["benign", "malignant"] * 2))
    with pytest.raises(HarnessError, match=r"y holds text labels \(<U9, e\.g\. 'benign'\).*"
                                           r"classes, y = np\.unique\(labels, return_inverse=True\)"):
        load_dataset(f"npz:{tmp_path / 't.npz'}")
    y = np.unique(np.array(["benign", "malignant"] * 2), return_inverse=True)[1]
    np.savez(tmp_path / "ok.npz", x=np.arange(8.0).reshape(4, 2), y=y, classes=np.array(["benign", "malignant"]))
    assert load_dataset(f"npz:{tmp_path / 'ok.npz'}").classes == ("benign", "malignant")
