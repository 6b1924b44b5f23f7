"""Loader edge cases from an audit: images wider than 8 bits, one gray/RGB rule for `imagefolder:` and
`hf:` that depends on the whole split (never on `--subset` or the decode cache), channels-last RGBA
and empty test splits in `npz:`, and the rule every loader shares: every class has training samples,
and there are at least two."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import count_decodes

from harness.datasets import imagefolder_cache, load_dataset
from harness.errors import HarnessError

# --- helpers -----------------------------------------------------------------------------------


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _gray(seed: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def _rgb(seed: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _hf_from_files(path: Path, files: list[Path], labels: list[int], names: list[str]) -> Path:
    """A saved Hugging Face dataset holding the bytes of `files` (so both loaders decode the same
    files), with a ClassLabel of `names`."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {"image": [{"bytes": f.read_bytes(), "path": None} for f in files], "label": labels}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    return path


# --- 1. images wider than 8 bits are refused ---------------------------------------------------

_WIDE = [
    ("I;16", np.array([[500, 1000], [30000, 60000]], dtype=np.uint16), "png"),  # 16-bit gray PNG
    ("I", np.array([[0, 70000], [5, 9]], dtype=np.int32), "tif"),  # 32-bit integer TIFF
    ("F", np.array([[0.1, 0.5], [0.9, 0.2]], dtype=np.float32), "tif"),  # float TIFF
]


@pytest.mark.parametrize(("mode", "pixels", "ext"), _WIDE)
def test_imagefolder_refuses_images_wider_than_8_bits(tmp_path: Path, mode: str, pixels: np.ndarray,
                                                      ext: str) -> None:
    """convert("RGB") clipped them: 16-bit images all became 255, floats in [0, 1] all 0."""
    root = tmp_path / "ds"
    _save(root / "a" / f"0.{ext}", Image.fromarray(_gray(0, (2, 2))))
    wide = _save(root / "b" / f"1.{ext}", Image.fromarray(pixels))
    with Image.open(wide) as im:  # Pillow 9.1-9.3 open a 16-bit PNG as "I", later ones as "I;16"
        opened = im.mode
    assert opened == mode or (mode == "I;16" and opened == "I")
    with pytest.raises(HarnessError) as err:
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert f"image {wide} has mode {opened!r}" in message and "convert the images to 8-bit first" in message
    # outside the decoded prefix too: a subset sees the same split, so the same refusal
    with pytest.raises(HarnessError, match=f"image {wide} has mode"):
        load_dataset(f"imagefolder:{root}", subset=1, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(("mode", "pixels", "ext"), _WIDE)
def test_hf_refuses_images_wider_than_8_bits(tmp_path: Path, mode: str, pixels: np.ndarray, ext: str) -> None:
    files = [_save(tmp_path / "img" / f"0.{ext}", Image.fromarray(_gray(0, (2, 2)))),
             _save(tmp_path / "img" / f"1.{ext}", Image.fromarray(pixels))]
    saved = _hf_from_files(tmp_path / "hf", files, [0, 1], ["a", "b"])
    with pytest.raises(HarnessError) as err:
        load_dataset(f"hf:{saved}")
    message = str(err.value)
    assert f"hf:{saved}: the image of row 1 (column 'image') has mode {mode!r}" in message
    assert "convert the images to 8-bit first" in message


# --- 1b. one gray rule for imagefolder and hf ---------------------------------------------------


def _gray_modes(seed: int) -> dict[str, Image.Image]:
    """The same kind of gray picture in every gray mode: 1-bit, L, L with alpha, a palette of grays."""
    base = Image.fromarray(_gray(seed))
    la = base.convert("LA")
    la.putalpha(Image.fromarray(_gray(seed + 100)))  # alpha that must not leak into the pixels
    return {"1": base.convert("1"), "L": base, "LA": la, "P": base.convert("P")}


def test_gray_modes_decode_to_one_channel_alike_in_imagefolder_and_hf(tmp_path: Path) -> None:
    images = _gray_modes(0)
    files = [_save(tmp_path / "ds" / ("a" if i % 2 == 0 else "b") / f"{i}.png", im)
             for i, im in enumerate(images.values())]
    modes = []
    for f in files:
        with Image.open(f) as im:
            modes.append(im.mode)
    assert modes == ["1", "L", "LA", "P"]
    expected = np.stack([np.asarray(im.convert("L")) for im in images.values()])[:, None]
    folder = load_dataset(f"imagefolder:{tmp_path / 'ds'}", cache_dir=tmp_path / "cache")
    assert folder.x_train.shape == (4, 1, 8, 6) and np.array_equal(folder.x_train.numpy(), expected)
    assert set(np.unique(folder.x_train[0].numpy()).tolist()) <= {0, 255}  # the 1-bit image
    hf = load_dataset(f"hf:{_hf_from_files(tmp_path / 'hf', files, [0, 1, 0, 1], ['a', 'b'])}")
    assert torch.equal(hf.x_train, folder.x_train)


def test_a_colour_palette_makes_the_split_rgb_alike_in_imagefolder_and_hf(tmp_path: Path) -> None:
    gray = Image.fromarray(_gray(1))
    colour = Image.fromarray(_rgb(2)).quantize(16)  # mode P, a palette of colours
    files = [_save(tmp_path / "ds" / "a" / "0.png", gray), _save(tmp_path / "ds" / "b" / "1.png", colour)]
    folder = load_dataset(f"imagefolder:{tmp_path / 'ds'}", cache_dir=tmp_path / "cache")
    assert folder.x_train.shape == (2, 3, 8, 6)
    assert np.array_equal(folder.x_train[0].numpy(), np.repeat(np.asarray(gray)[None], 3, axis=0))
    assert np.array_equal(folder.x_train[1].numpy(), np.asarray(colour.convert("RGB")).transpose(2, 0, 1))
    hf = load_dataset(f"hf:{_hf_from_files(tmp_path / 'hf', files, [0, 1], ['a', 'b'])}")
    assert torch.equal(hf.x_train, folder.x_train)


# --- 2. the channel count of a subset does not depend on the cache ----------------------------


def _mixed_folder(root: Path) -> list[np.ndarray]:
    """Six images in canonical order: three gray, then three RGB; returns their RGB pixels."""
    pixels = []
    for i in range(6):
        a = _gray(i) if i < 3 else _rgb(i)
        _save(root / ("a" if i % 2 == 0 else "b") / f"{i}.png", Image.fromarray(a))
        pixels.append(np.repeat(a[None], 3, axis=0) if a.ndim == 2 else a.transpose(2, 0, 1))
    return pixels


def test_a_subset_of_a_mixed_folder_is_rgb_on_a_fresh_cache_and_after_a_full_decode(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pixels = _mixed_folder(root)
    fresh = load_dataset(f"imagefolder:{root}", subset=2, cache_dir=tmp_path / "fresh")
    full = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "warm")
    warm = load_dataset(f"imagefolder:{root}", subset=2, cache_dir=tmp_path / "warm")
    again = load_dataset(f"imagefolder:{root}", subset=2, cache_dir=tmp_path / "fresh")  # from its own cache
    assert fresh.x_train.shape == warm.x_train.shape == again.x_train.shape == (2, 3, 8, 6)
    assert np.array_equal(full.x_train.numpy(), np.stack(pixels))
    for ds in (fresh, warm, again):
        assert torch.equal(ds.x_train, full.x_train[:2]) and ds.fingerprint == full.fingerprint
    # the small decode is a valid prefix of the full one: a later full load on that cache agrees
    assert torch.equal(load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "fresh").x_train, full.x_train)


def test_a_subset_decodes_only_its_prefix_and_reads_only_the_headers_of_the_rest(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    root = tmp_path / "ds"
    _mixed_folder(root)
    decoded = count_decodes(monkeypatch)
    ds = load_dataset(f"imagefolder:{root}", subset=2, cache_dir=tmp_path / "cache")
    assert decoded == [2] and ds.x_train.shape == (2, 3, 8, 6)


def test_an_all_gray_folder_stays_one_channel_under_a_subset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for i in range(4):
        _save(root / ("a" if i % 2 == 0 else "b") / f"{i}.png", Image.fromarray(_gray(i)))
    ds = load_dataset(f"imagefolder:{root}", subset=2, cache_dir=tmp_path / "cache")
    assert ds.x_train.shape == (2, 1, 8, 6) and np.array_equal(ds.x_train[1, 0].numpy(), _gray(1))


def test_the_decode_cache_version_was_bumped() -> None:
    """Version 3 files may hold a prefix decoded gray from a mixed split: never read them again."""
    assert imagefolder_cache._CACHE_VERSION == 4


# --- 3. npz: channels-last RGBA ---------------------------------------------------------------


def test_npz_refuses_channels_last_rgba(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 4), dtype=np.uint8)
    np.savez(tmp_path / "rgba.npz", x=x, y=np.arange(6) % 2)
    with pytest.raises(HarnessError, match=r"x has shape \(6, 16, 16, 4\), which looks channels-last.*transpose"):
        load_dataset(f"npz:{tmp_path / 'rgba.npz'}")
    np.savez(tmp_path / "first.npz", x=x.transpose(0, 3, 1, 2), y=np.arange(6) % 2)  # channels first: fine
    ds = load_dataset(f"npz:{tmp_path / 'first.npz'}")
    assert ds.x_train.shape == (6, 4, 16, 16) and np.array_equal(ds.x_train.numpy(), x.transpose(0, 3, 1, 2))


# --- 4. npz: an empty test split is no test split ---------------------------------------------


def test_npz_empty_test_split_is_no_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5))
    np.savez(tmp_path / "t.npz", x=x, y=np.arange(20) % 2, x_test=np.zeros((0, 5)), y_test=np.zeros(0, np.int64))
    ds = load_dataset(f"npz:{tmp_path / 't.npz'}")
    assert ds.x_test.shape == (0, 5, 1, 1) and ds.x_test.dtype == torch.float32 and ds.y_test.shape == (0,)
    assert np.array_equal(ds.x_train[:, :, 0, 0].numpy(), x.astype(np.float32))
    images = rng.integers(0, 256, (4, 3, 4, 4), dtype=np.uint8)  # an empty float x_test beside uint8 images
    np.savez(tmp_path / "i.npz", x=images, y=np.array([0, 1, 0, 1]), x_test=np.zeros((0, 7)), y_test=np.zeros(0, int))
    img = load_dataset(f"npz:{tmp_path / 'i.npz'}")
    assert img.x_train.dtype == torch.uint8 and img.is_image and img.x_test.shape == (0, 3, 4, 4)


def test_npz_uint8_pixels_beside_unit_floats_are_refused_as_two_scales(tmp_path: Path) -> None:
    """Both splits are normalized with the training split's statistics: x in 0..255 and x_test in
    [0, 1] gave a silently wrong test accuracy. Floats on the pixel scale are still taken."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 3, 4, 4), dtype=np.uint8)
    y = np.arange(8) % 2
    np.savez(tmp_path / "a.npz", x=images, y=y, x_test=images[:4] / 255.0, y_test=y[:4])
    with pytest.raises(HarnessError, match=r"x in uint8 \(0\.\.255\) but x_test in floats within \[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'a.npz'}")
    np.savez(tmp_path / "b.npz", x=images / 255.0, y=y, x_test=images[:4], y_test=y[:4])
    with pytest.raises(HarnessError, match=r"x_test in uint8 .* but x in floats"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")
    np.savez(tmp_path / "c.npz", x=images, y=y, x_test=images[:4].astype(np.float32), y_test=y[:4])
    same = load_dataset(f"npz:{tmp_path / 'c.npz'}")
    assert np.array_equal(same.x_test.numpy(), images[:4].astype(np.float32))


def test_a_run_on_an_npz_without_test_samples_reports_nan_test_accuracy(tmp_path: Path, make_config) -> None:
    from harness.experiment import Experiment

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(60, 5)) + y[:, None], y=y, x_test=np.zeros((0, 5)),
             y_test=np.zeros(0, np.int64))
    result = Experiment(make_config(dataset=f"npz:{tmp_path / 't.npz'}")).run()
    assert not result.failures and result.trained
    runs = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    assert runs and all(np.isnan(r["test_acc"]) for r in runs)
    assert all(0.0 <= r["train_acc"] <= 1.0 for r in runs)


# --- 5. every class has training samples, and there are two ------------------------------------


def test_npz_refuses_a_named_class_that_never_occurs(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 3)), y=np.array([1, 0, 1, 0]), classes=np.array(["cat", "dog", "emu"]))
    with pytest.raises(HarnessError, match=r"class id\(s\) \[2\] \(classes \['emu'\]\) never occur; remap"):
        load_dataset(f"npz:{tmp_path / 't.npz'}")


def test_imagefolder_refuses_an_empty_class_folder_and_a_single_class(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for i in range(2):
        _save(root / ("ant" if i == 0 else "cow") / f"{i}.png", Image.fromarray(_gray(i)))
    (root / "bee").mkdir()
    (root / "bee" / "notes.txt").write_text("no images here")
    with pytest.raises(HarnessError) as err:
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    assert "class id(s) [1] (classes ['bee']) never occur" in str(err.value)
    assert f"put images in those class folders of {root}" in str(err.value)
    (root / "bee" / "notes.txt").unlink()
    (root / "bee").rmdir()
    assert load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache").classes == ("ant", "cow")
    (root / "cow" / "1.png").rename(root / "ant" / "1.png")
    (root / "cow").rmdir()
    with pytest.raises(HarnessError, match=r"a single class \('ant'\); a classifier needs at least 2"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")


def test_hf_refuses_a_classlabel_class_that_never_occurs(tmp_path: Path) -> None:
    files = [_save(tmp_path / "img" / f"{i}.png", Image.fromarray(_gray(i))) for i in range(4)]
    saved = _hf_from_files(tmp_path / "hf", files, [0, 2, 0, 2], ["neg", "neutral", "pos"])
    with pytest.raises(HarnessError) as err:
        load_dataset(f"hf:{saved}")
    message = str(err.value)
    assert "class id(s) [1] (classes ['neutral']) never occur" in message
    assert "re-encode column 'label' with ids 0..C-1 of the classes that occur" in message


def test_the_three_loaders_refuse_the_same_unused_class(tmp_path: Path) -> None:
    """The same two images of class 'a' under classes (a, b): one rule, one answer, three loaders."""
    files = [_save(tmp_path / "ds" / "a" / f"{i}.png", Image.fromarray(_gray(i))) for i in range(2)]
    (tmp_path / "ds" / "b").mkdir()
    np.savez(tmp_path / "t.npz", x=np.stack([_gray(0), _gray(1)]), y=np.array([0, 0]), classes=np.array(["a", "b"]))
    names = [f"imagefolder:{tmp_path / 'ds'}", f"npz:{tmp_path / 't.npz'}"]
    if importlib.util.find_spec("datasets") is not None:
        names.append(f"hf:{_hf_from_files(tmp_path / 'hf', files, [0, 0], ['a', 'b'])}")
    for name in names:
        with pytest.raises(HarnessError, match=r"class id\(s\) \[1\] \(classes \['b'\]\) never occur"):
            load_dataset(name, cache_dir=tmp_path / "cache")
