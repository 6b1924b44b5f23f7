"""Dataset loading audited for silently wrong data and lost files: the test samples a `--subset`
keeps, the canonical training order (stray files, shared indices, hidden folders), split folders
taken for classes, image types skipped unnoticed, the content-digest cache's key, `hf:` test labels
and `npz:` arrays that are not read. Each test failed on the code before its fix."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.datasets import base, load_dataset
from harness.errors import HarnessError


def _ppm(path: Path, value: int, size: int = 4) -> None:
    """A binary PPM of one colour: a fixed file size whatever the pixels (an edit keeps the size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"P6\n{size} {size}\n255\n".encode() + bytes([value, value // 2, 255 - value]) * size * size)


def _load(root: Path, cache: Path, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(f"imagefolder:{root}", cache_dir=cache, **kwargs)
    return ds, [str(w.message) for w in caught]


# --- the test samples kept under --subset --------------------------------------------------------


def test_a_subset_keeps_test_images_of_every_class_not_a_prefix_of_one(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline CIFAR-10 copy numbers its test images per class (`test/cat/0000.jpg`), so they were
    in (class, path) order and `--subset` kept the first 1,000: all airplanes."""
    monkeypatch.setattr(base, "_MIN_TEST_WITH_SUBSET", 3)  # 1,000 in earnest: too many to build here
    root = tmp_path / "ds"
    for c, cls in enumerate("abc"):
        for i in range(2):
            _ppm(root / "train" / cls / f"{2 * c + i:05d}.ppm", 10 * (2 * c + i))
        for i in range(3):
            _ppm(root / "test" / cls / f"{i:04d}.ppm", 100 + 10 * c + i)
    full = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    sub = load_dataset(f"imagefolder:{root}", subset=3, cache_dir=tmp_path / "cache")
    assert full.y_test.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sub.y_test.tolist() == [0, 1, 2]  # was [0, 0, 0]
    assert sub.x_test[:, 0, 0, 0].tolist() == [100, 110, 120]  # the first image of each class, decoded
    assert torch.equal(sub.x_test, full.x_test[[0, 3, 6]])
    assert sub.fingerprint == full.fingerprint  # which test images a subset keeps is not the dataset's identity
    again = load_dataset(f"imagefolder:{root}", subset=5, cache_dir=tmp_path / "cache")
    assert again.y_test.tolist() == [0, 0, 1, 1, 2]  # round robin, then back in canonical order


def test_npz_with_a_class_sorted_test_split_keeps_every_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_MIN_TEST_WITH_SUBSET", 4)
    y_test = np.repeat(np.arange(4), 5)  # class by class
    x_test = np.arange(20, dtype=np.float32)[:, None]
    np.savez(tmp_path / "t.npz", x=np.arange(8, dtype=np.float32)[:, None], y=np.arange(8) % 4,
             x_test=x_test, y_test=y_test)
    ds = load_dataset(f"npz:{tmp_path / 't.npz'}", subset=4)
    assert ds.y_test.tolist() == [0, 1, 2, 3]  # was [0, 0, 0, 0]
    assert ds.x_test[:, 0, 0, 0].tolist() == [0.0, 5.0, 10.0, 15.0]


# --- the canonical training order -----------------------------------------------------------------


def _indexed(root: Path, labels: str) -> None:
    for i, cls in enumerate(labels):
        _ppm(root / cls / f"{i:05d}.ppm", 10 * i)


@pytest.mark.parametrize("stray, why", [("a/00001 copy.ppm", "1 do not"),
                                        ("a/00002.ppm", "a/00002.ppm and b/00002.ppm")])
def test_a_stray_file_that_breaks_the_index_order_is_reported(tmp_path: Path, stray: str, why: str) -> None:
    """One non-integer stem or one index in two class folders reordered every sample, silently: a
    label file in the original order (`--noisy-labels`) then lined up with the wrong images."""
    root = tmp_path / "ds"
    _indexed(root, "babab")
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.sample_names == ("b/00000.ppm", "a/00001.ppm", "b/00002.ppm", "a/00003.ppm", "b/00004.ppm")
    assert caught == []
    _ppm(root / stray, 99)
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.sample_names[:2] == (("a/00001 copy.ppm", "a/00001.ppm") if "copy" in stray else
                                   ("a/00001.ppm", "a/00002.ppm"))  # (class, path) order, as specified
    assert len(caught) == 1 and "not by index" in caught[0] and why in caught[0], caught


def test_images_in_a_hidden_subfolder_are_not_samples(tmp_path: Path) -> None:
    """A `.ipynb_checkpoints` copy inside a class folder was a sample, and its stem broke the index order."""
    root = tmp_path / "ds"
    _indexed(root, "abab")
    _ppm(root / "a" / ".ipynb_checkpoints" / "00000-checkpoint.ppm", 0)
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.n_train == 4 and ds.sample_names == ("a/00000.ppm", "b/00001.ppm", "a/00002.ppm", "b/00003.ppm")
    assert caught == []


@pytest.mark.parametrize("splits", [("training", "testing"), ("Train", "Test")])
def test_split_folders_are_not_taken_for_classes(tmp_path: Path, splits: tuple[str, str]) -> None:
    """Without a `train/` folder, `training/` and `testing/` were two classes: the label was the split."""
    root = tmp_path / "ds"
    for split in splits:
        _indexed(root / split, "abab")
    with pytest.raises(HarnessError, match=r"split folders .* among its class folders"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")


def test_a_val_folder_beside_train_says_it_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _indexed(root / "train", "abab")
    _indexed(root / "val", "ab")
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.x_test.shape[0] == 0
    assert len(caught) == 1 and "no test split" in caught[0] and "['val']" in caught[0]


def test_images_of_a_type_not_read_are_reported(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "ds"
    _indexed(root, "abab")
    Image.new("RGB", (4, 4)).save(root / "a" / "00004.gif")
    (root / "a" / "notes.txt").write_text("not an image, not reported")
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.n_train == 4
    assert len(caught) == 1 and "skipped 1 image(s)" in caught[0] and "00004.gif" in caught[0]


# --- the content-digest cache ---------------------------------------------------------------------


def test_a_file_rewritten_with_its_old_size_and_mtime_is_read_again(tmp_path: Path) -> None:
    """Size and mtime were the cache key of the content digest: a file rewritten with the same size and
    its mtime put back (tar -x, cp -p, rsync -a of another version) kept the old fingerprint and pixels."""
    root, cache = tmp_path / "ds", tmp_path / "cache"
    _indexed(root, "abab")
    first, _ = _load(root, cache)
    image = root / "b" / "00001.ppm"
    st = image.stat()
    _ppm(image, 200)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns == st.st_mtime_ns
    second, _ = _load(root, cache)
    assert second.x_train[1, 0, 0, 0] == 200 and first.x_train[1, 0, 0, 0] == 10
    assert second.fingerprint == _load(root, tmp_path / "fresh")[0].fingerprint != first.fingerprint


def test_a_test_split_relabelled_by_a_new_training_class_is_hashed_again(tmp_path: Path) -> None:
    """The test split's labels follow the training classes; its files alone keyed the cached digest, so
    a new training class `a` left the test digest of the old labels, and the fingerprint differed
    between this machine and a fresh one (a Ray node, a new cache): stored runs not found."""
    root, cache = tmp_path / "ds", tmp_path / "cache"
    _indexed(root / "train", "bcbc")
    _indexed(root / "test", "bc")
    _load(root, cache)
    _ppm(root / "train" / "a" / "00009.ppm", 90)
    here, _ = _load(root, cache)
    fresh, _ = _load(root, tmp_path / "fresh")
    assert here.y_test.tolist() == fresh.y_test.tolist() == [1, 2]
    assert here.fingerprint == fresh.fingerprint


# --- hf: and npz: ---------------------------------------------------------------------------------


def _hf_split(values: list[int], labels: list[int], names: list[str], decode: bool = True):  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(decode=decode), "label": datasets.ClassLabel(names=names)})
    images = [Image.new("L", (4, 4), v) for v in values]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_hf_test_labels_follow_the_class_names_of_the_training_split(tmp_path: Path) -> None:
    """Splits saved apart name their ClassLabel ids by the classes they hold: test id 1 ("c") was read as
    training class 1 ("b"), and test accuracy was measured against the wrong classes."""
    datasets = pytest.importorskip("datasets")
    train = _hf_split([0, 10, 20, 30, 40, 50], [0, 1, 2, 0, 1, 2], ["a", "b", "c"])
    datasets.DatasetDict({"train": train, "test": _hf_split([100, 120], [0, 1], ["a", "c"])}).save_to_disk(
        str(tmp_path / "hf"))
    ds = load_dataset(f"hf:{tmp_path / 'hf'}")
    assert ds.classes == ("a", "b", "c") and ds.y_test.tolist() == [0, 2]  # was [0, 1]
    assert ds.x_test[:, 0, 0, 0].tolist() == [100, 120]
    datasets.DatasetDict({"train": train, "test": _hf_split([100], [1], ["a", "z"])}).save_to_disk(
        str(tmp_path / "hf2"))
    with pytest.raises(HarnessError, match=r"test split's labels \['z'\] are not classes"):
        load_dataset(f"hf:{tmp_path / 'hf2'}")


def test_hf_image_column_saved_without_decoding_is_decoded(tmp_path: Path) -> None:
    """`Image(decode=False)` rows are {path, bytes}: the loader crashed with an AttributeError."""
    _hf_split([0, 10, 20, 30], [0, 1, 0, 1], ["a", "b"], decode=False).save_to_disk(str(tmp_path / "hf"))
    ds = load_dataset(f"hf:{tmp_path / 'hf'}")
    assert ds.x_train.shape == (4, 1, 4, 4) and ds.x_train[:, 0, 0, 0].tolist() == [0, 10, 20, 30]


def test_npz_arrays_that_are_not_read_are_reported(tmp_path: Path) -> None:
    """`xtest`/`ytest` (a typo) left the dataset without a test split, silently."""
    x, y = np.arange(12, dtype=np.float32)[:, None], np.arange(12) % 2
    np.savez(tmp_path / "t.npz", x=x, y=y, xtest=x[:4], ytest=y[:4])
    with pytest.warns(UserWarning, match=r"holds arrays \['xtest', 'ytest'\] that are not read"):
        ds = load_dataset(f"npz:{tmp_path / 't.npz'}")
    assert ds.x_test.shape[0] == 0


def test_a_folder_numbered_per_class_is_not_warned_about(tmp_path: Path) -> None:
    """`cat/0.ppm` beside `dog/0.ppm` (numbering per class, common in real data) is not a broken
    global index: every load warned and advised renaming the files."""
    root = tmp_path / "ds"
    for cls in ("cat", "dog", "eel"):
        for i in range(4):
            _ppm(root / cls / f"{i}.ppm", i)
    ds, caught = _load(root, tmp_path / "cache")
    assert ds.n_train == 12 and ds.sample_names[:2] == ("cat/0.ppm", "cat/1.ppm")  # (class, path) order
    assert caught == []
