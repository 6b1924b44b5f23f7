"""`--dataset` given a download as it came (an archive) or one `.npy` array: the error says what to
do with it, where "unknown dataset" alone left the fix to guesswork (dq26)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.datasets import load_dataset
from harness.datasets.names import path_hint
from harness.errors import HarnessError

UNPACK = ("; an archive is unpacked first (unzip, tar -xf), then --dataset imagefolder:FOLDER for the folder of "
          "class subfolders it holds")
NPY = ("; a single .npy array is not a dataset: save the samples and their labels together, "
       "numpy.savez('mine.npz', x=x, y=y), then --dataset npz:mine.npz")


@pytest.mark.parametrize(("name", "hint"), [
    ("photos.zip", UNPACK), ("cifar/Photos.TAR.GZ", UNPACK), ("d.tgz", UNPACK), ("x.npy", NPY),
])
def test_an_archive_or_one_array_is_answered_with_what_to_do(tmp_path: Path, name: str, hint: str) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(HarnessError) as caught:
        load_dataset(str(path))
    assert str(caught.value) == (f"unknown dataset {str(path)!r}; valid names: digits, cifar10, cifar100, mnist, "
                                 f"fashion-mnist, imagefolder:PATH, npz:PATH, hf:PATH{hint}")


def test_a_folder_named_like_an_archive_is_still_a_folder(tmp_path: Path) -> None:
    (tmp_path / "photos.zip").mkdir()
    assert path_hint(str(tmp_path / "photos.zip")).startswith("; did you mean --dataset imagefolder:")
    assert path_hint("archive") == ""
