"""Dataset loaders, third review: inputs a user meets that crashed with a traceback or gave other numbers
than the docs promise (a damaged compressed .npz, damaged MNIST files, non-UTF-8 names, `hf:` rows that do
not decode, a test split that is the training split, EXIF-oriented photos). Nothing here downloads."""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.errors import HarnessError

PIL = pytest.importorskip("PIL.Image")


def _image_folder(root: Path, exif_rotate: bool = False, per_class: int = 3) -> list[tuple[Path, str]]:
    """root/a/0.jpg ... root/b/5.jpg, 8x6 random RGB JPEGs (EXIF orientation 6 when asked)."""
    rng = np.random.default_rng(0)
    files = []
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for _ in range(per_class):
            image = PIL.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
            exif = image.getexif()
            if exif_rotate:
                exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
            path = root / cls / f"{len(files)}.jpg"
            image.save(path, exif=exif, quality=95)
            files.append((path, cls))
    return files


# ---------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("save", [np.savez_compressed, np.savez])
def test_npz_damaged_member_is_an_error_not_a_traceback(tmp_path: Path, save) -> None:
    """zlib.error (a damaged savez_compressed member), and tokenize.TokenError (numpy parsing a damaged
    array header), escaped as tracebacks with exit code 1."""
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"
    save(good, x=rng.normal(size=(200, 20)), y=np.arange(200) % 2)
    with zipfile.ZipFile(good) as archive:
        end = archive.getinfo("y.npy").header_offset  # x.npy's deflated data lies before it
    data = good.read_bytes()
    for offset in range(0, min(end, 2100), 50):  # a bad CRC, a zlib error (100, 200, ...), a damaged header
        damaged = bytearray(data)
        damaged[offset : offset + 50] = bytes(b ^ 0xFF for b in damaged[offset : offset + 50])
        bad = tmp_path / f"bad{offset}.npz"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(HarnessError, match="cannot read .* as a .npz file|is not a numpy array"):
            load_dataset(f"npz:{bad}")


# --------------------------------------------------------------------------------------- torchvision


def _mnist_raw(root: Path, images: bytes) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = struct.pack(">II", 0x801, 10) + bytes(10)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)


@pytest.mark.parametrize("images", [b"garbage", struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(28 * 28 * 4)],
                         ids=["bad-header", "truncated"])
def test_damaged_mnist_files_are_named_damaged(tmp_path: Path, images: bytes) -> None:
    """A bad header raised torchvision's bare AssertionError (a traceback); a short file was reported as
    'files not found' although they are there."""
    pytest.importorskip("torchvision")
    _mnist_raw(tmp_path, images)
    with pytest.raises(HarnessError, match="are damaged"):
        load_dataset("mnist", data_root=tmp_path, download=False)
    with pytest.raises(HarnessError, match="not found"):  # still: an empty data root
        load_dataset("mnist", data_root=tmp_path / "empty", download=False)


# --------------------------------------------------------------------------------------- imagefolder

posix_bytes_names = pytest.mark.skipif(sys.platform != "linux", reason="file names of arbitrary bytes")


@posix_bytes_names
def test_imagefolder_non_utf8_names_are_refused_by_name(tmp_path: Path) -> None:
    """A file or class folder named in Latin-1 crashed with a UnicodeEncodeError traceback."""
    root = tmp_path / "data"
    _image_folder(root)
    os.rename(root / "a" / "0.jpg", os.fsencode(root / "a") + b"/caf\xe9.jpg")
    with pytest.raises(HarnessError, match=r"not valid UTF-8.*rename"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    os.rename(os.fsencode(root / "a") + b"/caf\xe9.jpg", root / "a" / "0.jpg")
    os.rename(root / "b", os.fsencode(root) + b"/b\xf6")  # a class folder
    with pytest.raises(HarnessError, match="not valid UTF-8"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")


@posix_bytes_names
def test_non_utf8_dataset_path_is_refused_before_training(tmp_path: Path) -> None:
    """The folder loaded, trained, then the run crashed writing its results (the name is in every file)."""
    root = os.fsencode(tmp_path) + b"/d\xe9"
    os.mkdir(root)
    _image_folder(Path(os.fsdecode(root)))
    with pytest.raises(HarnessError, match="not valid UTF-8"):
        load_dataset(f"imagefolder:{os.fsdecode(root)}", cache_dir=tmp_path / "cache")
    from harness.datasets.imagefolder import _load_imagefolder  # the listing itself copes with such a path

    d = _load_imagefolder("x", Path(os.fsdecode(root)), None, tmp_path / "cache")
    assert d.sample_names == ("a/0.jpg", "a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg", "b/5.jpg")
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1]


# ------------------------------------------------------------------------------------------------ hf


@pytest.fixture
def hf_images(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})

    def save(name: str, files: list[tuple[Path, str]], **splits: list[tuple[Path, str]]) -> Path:
        def table(rows):
            return datasets.Dataset.from_dict({"img": [str(p) for p, _ in rows],
                                               "label": [["a", "b"].index(c) for _, c in rows]}, features=features)

        dd = datasets.DatasetDict({"train": table(files), **{k: table(v) for k, v in splits.items()}})
        dd.save_to_disk(str(tmp_path / name))
        return tmp_path / name

    return save


def test_hf_test_split_that_is_the_training_split_is_refused(tmp_path: Path, hf_images) -> None:
    """test=train measured held-out accuracy on the training rows, silently."""
    files = _image_folder(tmp_path / "img")
    path = hf_images("dd", files, test=files[:2], validation=files[2:4])
    for options in (",test=train", ",split=validation,test=validation"):
        with pytest.raises(HarnessError, match="is the training split"):
            load_dataset(f"hf:{path}{options}")
    assert len(load_dataset(f"hf:{path},split=validation,test=test").y_test) == 2


def test_hf_validation_without_test_split_warns(tmp_path: Path, hf_images) -> None:
    """A DatasetDict of train + validation had no test split (test accuracy NaN) without a word."""
    files = _image_folder(tmp_path / "img")
    path = hf_images("dd", files, validation=files[:2])
    with pytest.warns(UserWarning, match=r"no 'test' split.*test=validation"):
        d = load_dataset(f"hf:{path}")
    assert len(d.y_test) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(f"hf:{path},test=validation").y_test.tolist() == [0, 0]


def test_hf_undecodable_row_is_named(tmp_path: Path) -> None:
    """A damaged image said 'cannot be read: ...; check the path and its permissions', naming no row."""
    datasets = pytest.importorskip("datasets")
    buffer = io.BytesIO()
    PIL.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    good = {"bytes": buffer.getvalue(), "path": None}
    rows = [good] * 6 + [{"bytes": b"not an image", "path": None}]
    features = datasets.Features({"img": datasets.Image(decode=False), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"img": rows, "label": [i % 2 for i in range(7)]},
                               features=features).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(HarnessError, match=r"the image of row 6 \(column 'img'\) cannot be decoded"):
        load_dataset(f"hf:{tmp_path / 'bad'}")


def test_hf_and_imagefolder_give_the_same_pixels_for_exif_oriented_photos(tmp_path: Path, hf_images) -> None:
    """`datasets` turned EXIF-oriented JPEGs upright (and 8x6 into 6x8), `imagefolder:` did not: the same
    files gave other arrays through the two loaders, against the documented rule."""
    files = _image_folder(tmp_path / "img", exif_rotate=True)
    folder = load_dataset(f"imagefolder:{tmp_path / 'img'}", cache_dir=tmp_path / "cache")
    hf = load_dataset(f"hf:{hf_images('dd', files)}")
    assert tuple(hf.x_train.shape) == tuple(folder.x_train.shape) == (6, 3, 6, 8)
    assert np.array_equal(hf.x_train.numpy(), folder.x_train.numpy())
    assert hf.y_train.tolist() == folder.y_train.tolist() == [0, 0, 0, 1, 1, 1]
