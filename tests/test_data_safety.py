"""Loader-level bad input (issue 16): symbolic links never make a sample count twice, and damaged
or odd `npz:` files are one clear HarnessError each, never a traceback or a huge allocation."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError

# --- imagefolder and symbolic links ------------------------------------------------------------


def _tree(root: Path, per_class: int = 10) -> Path:
    """`per_class` distinct 4x4 PNGs in each of the classes a and b."""
    for c, cls in enumerate("ab"):
        for i in range(per_class):
            path = root / cls / f"{cls}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (i, c, 0)).save(path)
    return root


def _load(root: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")


def test_a_folder_loop_is_not_followed(tmp_path: Path) -> None:
    """`a/loop -> .` once turned 20 images into 420 samples (class a counted 41 times)."""
    root = _tree(tmp_path / "ds")
    os.symlink(".", root / "a" / "loop")
    with pytest.warns(UserWarning, match=r"not following folder link .*loop.*a loop"):
        ds = _load(root, tmp_path)
    assert ds.n_train == 20 and np.bincount(ds.y_train.numpy()).tolist() == [10, 10]


@pytest.mark.parametrize(
    ("link", "target", "reason"),
    [
        ("a/up", "..", "a loop"),  # the dataset folder itself
        ("a/other", "../b", "back into the dataset folder"),  # a sibling class
    ],
)
def test_folder_links_into_the_tree_are_not_followed(tmp_path: Path, link: str, target: str, reason: str) -> None:
    root = _tree(tmp_path / "ds", per_class=3)
    os.symlink(target, root / link)
    with pytest.warns(UserWarning, match=reason):
        ds = _load(root, tmp_path)
    assert ds.n_train == 6 and ds.y_train.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_link_to_an_ancestor_outside_the_tree_is_not_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", per_class=3)
    os.symlink(tmp_path, root / "a" / "everything")  # tmp_path holds the dataset folder
    with pytest.warns(UserWarning, match="a loop"):
        assert _load(root, tmp_path).n_train == 6


def test_links_to_files_and_folders_elsewhere_are_followed_once(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", per_class=3)
    elsewhere = _tree(tmp_path / "elsewhere", per_class=2)
    os.symlink(elsewhere / "b" / "b0.png", root / "a" / "linked.png")
    os.symlink(elsewhere / "a", root / "b" / "more")
    os.symlink(elsewhere / "a", root / "b" / "more_again")  # the same folder twice: listed once
    with pytest.warns(UserWarning, match=r"more_again .*already listed"):
        ds = _load(root, tmp_path)
    assert np.bincount(ds.y_train.numpy()).tolist() == [4, 5]


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("a/copy.png", "../b/b1.png"),  # a file of the tree under another name
        ("c", "b"),  # a class folder that is another class folder
    ],
)
def test_an_image_reached_twice_is_refused(tmp_path: Path, link: str, target: str) -> None:
    root = _tree(tmp_path / "ds", per_class=3)
    os.symlink(target, root / link)
    with pytest.raises(HarnessError, match=r"b[01]\.png is reached twice.*remove one of the links"):
        _load(root, tmp_path)


def test_a_test_image_that_is_a_training_image_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root / "train", per_class=3)
    (root / "test" / "a").mkdir(parents=True)
    os.symlink(root / "train" / "a" / "a2.png", root / "test" / "a" / "t.png")
    with pytest.raises(HarnessError, match=r"train/a/a2\.png is reached twice, as .*train/a/a2\.png and as .*t\.png"):
        _load(root, tmp_path)


def test_a_broken_image_link_is_a_clear_error(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", per_class=2)
    os.symlink("gone.png", root / "a" / "x.png")
    with pytest.raises(HarnessError, match=r"x\.png is not a readable file .*remove it or fix its target"):
        _load(root, tmp_path)


def test_an_unreadable_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.walk skipped folders it could not list, silently; a permission error is now one line.
    (Simulated: as root a mode-000 folder is still readable.)"""
    root = _tree(tmp_path / "ds", per_class=2)
    (root / "a" / "sub").mkdir()
    scandir = os.scandir

    def refuse(path):  # type: ignore[no-untyped-def]
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(HarnessError, match=r"cannot list folder .*sub: .*Permission denied.*readable"):
        _load(root, tmp_path)


def test_cache_file_names_are_short_digests_even_for_a_long_path(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["x" * 200] * 8))  # a 1,600-character folder path
    root = _tree(deep / "ds", per_class=2)
    assert _load(root, tmp_path).n_train == 4
    names = sorted(p.name for p in (tmp_path / "cache" / "datasets").iterdir())
    assert sorted(len(n) for n in names) == sorted([len("0" * 32 + "-4.npy"), len("0" * 32 + ".sha256"),
                                                    len("0" * 32 + "-4.pixels")]), names


# --- npz ---------------------------------------------------------------------------------------


def _features(n: int = 4) -> np.ndarray:
    return np.arange(2 * n, dtype=np.float32).reshape(n, 2)


def _npz_error(path: Path, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("label", [2**40, 2**60])
def test_npz_huge_label_is_refused_before_allocating(tmp_path: Path, label: int) -> None:
    """A label of 2**40 once tried to allocate 8 TiB (one slot per implied class)."""
    np.savez(tmp_path / "d.npz", x=_features(), y=np.array([0, 1, label, 1]))
    _npz_error(tmp_path / "d.npz", rf"class id {label} but only 4 samples.*np\.unique")


def test_npz_unsigned_label_beyond_int64_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=_features(), y=np.array([0, 1, 2**63 + 5, 1], dtype=np.uint64))
    _npz_error(tmp_path / "d.npz", r"class id 9223372036854775813; class ids must be 0\.\.C-1")


@pytest.mark.parametrize("names", [("x.txt", "y.txt"), ("x", "y"), ("x.npy", "y.npy")])
def test_npz_that_is_a_zip_of_text_files(tmp_path: Path, names: tuple[str, str]) -> None:
    file = tmp_path / "text.npz"
    with zipfile.ZipFile(file, "w") as z:
        z.writestr(names[0], "1 2 3\n4 5 6\n")
        z.writestr(names[1], "0 1\n")
    _npz_error(file, r"'x(\.txt|\.npy)?' (of .* )?is not a numpy array.*numpy\.savez")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npz_truncated_member_is_damaged_not_an_object_array(tmp_path: Path) -> None:
    file = tmp_path / "d.npz"
    with zipfile.ZipFile(file, "w") as z:
        z.writestr("x.npy", _npy_bytes(np.zeros((100, 3)))[:300])
        z.writestr("y.npy", _npy_bytes(np.arange(100) % 2))
    _npz_error(file, r"'x\.npy' .* declares shape \(100, 3\) \(2,400 bytes\) but holds .* damaged")


def test_npz_header_promising_terabytes_is_refused_before_allocating(tmp_path: Path) -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 3)))
    header["shape"] = (2**40, 3)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(bytes(48))
    file = tmp_path / "d.npz"
    with zipfile.ZipFile(file, "w") as z:
        z.writestr("x.npy", buffer.getvalue())
        z.writestr("y.npy", _npy_bytes(np.arange(4) % 2))
    _npz_error(file, r"declares shape \(1099511627776, 3\)")


def test_npz_class_names_saved_as_bytes_are_decoded(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=_features(), y=np.array([0, 1, 0, 1]), classes=np.array([b"cat", b"dog"]))
    assert load_dataset(f"npz:{tmp_path / 'd.npz'}").classes == ("cat", "dog")


@pytest.mark.parametrize("kind", ["npz", "imagefolder"])
def test_a_path_the_os_refuses_is_one_error(kind: str, tmp_path) -> None:
    """A file name longer than the file system allows was an OSError traceback."""
    with pytest.raises(HarnessError, match="is 300 bytes long, and file systems take at most 255"):
        load_dataset(f"{kind}:{tmp_path / ('a' * 300)}")
