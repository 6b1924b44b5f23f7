"""Decode once (issue 17): an image folder is decoded into one uint8 `.npy` per split beside the
run store, memory-mapped by every process that loads it; a subset is served from a larger decode,
concurrent processes decode once between them, a changed folder is a new file; the dataset
fingerprint (part of every stored run's address) is made from the images' names, labels and bytes,
so a copy of the folder elsewhere, with new mtimes, is the same dataset and reuses the decode."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.datasets import imagefolder_cache, load_dataset

REPO = Path(__file__).resolve().parent.parent


def _folder(root: Path, per_class: int = 4) -> Path:
    for c, name in enumerate(("ant", "bee", "cow")):
        for i in range(per_class):
            index = c * per_class + i
            color = (10 * index % 256, 255 - index, 3 * index % 256)
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (5, 4), color).save(root / "train" / name / f"{index:05d}.png")
    return root


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(files):  # type: ignore[no-untyped-def]
        raise AssertionError(f"decoded {len(files)} images again")

    monkeypatch.setattr(imagefolder_cache, "_decode_images", refuse)


def test_the_decode_is_one_memory_mapped_npy_that_serves_every_subset(tmp_path, monkeypatch) -> None:
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    full = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    (file,) = (cache / "datasets").glob("*.npy")
    assert file.name.endswith("-12.npy")
    assert np.array_equal(np.load(file, allow_pickle=False), full.x_train.numpy())
    _forbid_decoding(monkeypatch)
    again = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    part = load_dataset(f"imagefolder:{root}", subset=5, cache_dir=cache)
    assert torch.equal(again.x_train, full.x_train) and torch.equal(part.x_train, full.x_train[:5])
    assert part.fingerprint == full.fingerprint == again.fingerprint
    # the rows come from the file's pages, not a copy; a write stays in this process (copy-on-write)
    before = file.read_bytes()
    again.x_train[0].fill_(7)
    assert file.read_bytes() == before


def test_a_larger_decode_replaces_the_smaller_prefix(tmp_path, monkeypatch) -> None:
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    small = load_dataset(f"imagefolder:{root}", subset=3, cache_dir=cache)
    assert [p.name.rsplit("-", 1)[1] for p in (cache / "datasets").glob("*.npy")] == ["3.npy"]
    full = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert [p.name.rsplit("-", 1)[1] for p in (cache / "datasets").glob("*.npy")] == ["12.npy"]
    assert torch.equal(small.x_train, full.x_train[:3])  # the old map stays valid after the unlink


def test_a_changed_folder_is_decoded_again(tmp_path) -> None:
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    first = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    Image.new("RGB", (5, 4), (1, 2, 3)).save(root / "train" / "ant" / "00099.png")
    second = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert second.n_train == 13 and second.fingerprint != first.fingerprint
    assert len(list((cache / "datasets").glob("*.npy"))) == 2


def test_a_damaged_cache_file_is_a_miss_not_an_error(tmp_path) -> None:
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    first = load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train.clone()
    (file,) = (cache / "datasets").glob("*.npy")
    damaged = file.with_suffix(".tmp")
    damaged.write_bytes(file.read_bytes()[:-7])  # cut short
    damaged.replace(file)
    assert torch.equal(load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train, first)
    file.write_bytes(b"not an npy")
    assert torch.equal(load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train, first)


def test_cached_pixels_changed_in_place_are_decoded_again_not_trained_on(tmp_path) -> None:
    # same size, same header, other pixels: the array loads fine, so only the hash written beside
    # it can tell; a run trained on it would be stored under the dataset's true fingerprint
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    first = load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train.clone()
    (file,) = (cache / "datasets").glob("*.npy")
    assert file.with_suffix(".pixels").read_text().strip() == hashlib.sha256(first.numpy().tobytes()).hexdigest()
    zeroed = np.load(file, allow_pickle=False) * 0
    with open(file, "r+b") as f:  # overwrite the pixels after the header, as a stray write would
        f.seek(len(file.read_bytes()) - zeroed.nbytes)
        f.write(zeroed.tobytes())
    assert (np.load(file, allow_pickle=False) == 0).all()
    with pytest.warns(UserWarning, match="is damaged"):
        again = load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train
    assert torch.equal(again, first)
    assert np.array_equal(np.load(file, allow_pickle=False), first.numpy())  # written anew, with its hash
    file.with_suffix(".pixels").unlink()  # a file without its hash is never served unchecked
    assert torch.equal(load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train, first)
    assert file.with_suffix(".pixels").exists()


def _frozen_fingerprint(train: Path) -> str:
    """The fingerprint from its frozen definition (version 2): per split, SHA-256 over each image's
    path in the split, label and bytes; nothing about where the folder lies or when it was written."""
    files = sorted(train.rglob("*.png"), key=lambda p: int(p.stem))
    classes = sorted(d.name for d in train.iterdir())
    lines = "".join(f"{p.relative_to(train).as_posix()}\t{classes.index(p.parent.name)}\t"
                    f"{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in files)
    key = {"version": 2, "split": "train", "count": len(files), "content": hashlib.sha256(lines.encode()).hexdigest()}
    part = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return hashlib.sha256(part.encode()).hexdigest()[:16]


def test_the_fingerprint_equals_its_frozen_definition(tmp_path) -> None:
    """Stored runs are addressed by the fingerprint: recomputed here from its frozen definition."""
    root = _folder(tmp_path / "ds")
    assert load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache").fingerprint == _frozen_fingerprint(
        root / "train")


def test_a_copy_elsewhere_with_new_mtimes_is_the_same_dataset(tmp_path, monkeypatch) -> None:
    """A folder copied to another disk or Ray node (new path, new mtimes) keeps its fingerprint, so
    its stored runs are found and its workers agree with the driver; the decode is reused too."""
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    first = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # contents only: new mtimes
    for f in copy.rglob("*.png"):
        os.utime(f, (1_800_000_000, 1_800_000_000))
    _forbid_decoding(monkeypatch)
    second = load_dataset(f"imagefolder:{copy}", cache_dir=cache)
    assert second.fingerprint == first.fingerprint and torch.equal(second.x_train, first.x_train)
    assert len(list((cache / "datasets").glob("*.npy"))) == 1
    assert len(list((cache / "datasets").glob("*.sha256"))) == 2  # one content digest per listing


def test_the_fingerprint_follows_bytes_and_labels_not_mtimes(tmp_path) -> None:
    root, cache = _folder(tmp_path / "ds"), tmp_path / "cache"
    first = load_dataset(f"imagefolder:{root}", cache_dir=cache).fingerprint
    image = root / "train" / "bee" / "00005.png"
    os.utime(image, (1_900_000_000, 1_900_000_000))
    assert load_dataset(f"imagefolder:{root}", cache_dir=cache).fingerprint == first  # touched, same bytes
    data = bytearray(image.read_bytes())
    data[-13] ^= 1  # one bit of the IEND chunk's CRC: same size, other bytes
    image.write_bytes(bytes(data))
    os.utime(image, (1_900_000_000, 1_900_000_000))  # the old mtime put back: only the bytes differ,
    # which the cached digest's key (path, size, mtime) cannot see, so a fresh cache reads them
    changed = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "fresh").fingerprint
    assert changed != first
    image.rename(root / "train" / "ant" / "00005.png")  # same bytes, another label
    relabelled = load_dataset(f"imagefolder:{root}", cache_dir=cache).fingerprint
    assert relabelled not in (first, changed)


def test_processes_loading_at_once_decode_once(tmp_path) -> None:
    root, cache = _folder(tmp_path / "ds", per_class=30), tmp_path / "cache"
    script = (
        "import sys\n"
        "from harness.datasets import imagefolder_cache, load_dataset\n"
        "real = imagefolder_cache._decode_images\n"
        "def counted(files):\n"
        "    open(sys.argv[2], 'a').write('decoded\\n')\n"
        "    return real(files)\n"
        "imagefolder_cache._decode_images = counted\n"
        f"d = load_dataset('imagefolder:{root}', cache_dir=sys.argv[1])\n"
        "print(int(d.x_train.sum()))\n"
    )
    log = tmp_path / "decodes.log"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cache), str(log)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    sums = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(sums) == 1
    assert log.read_text().count("decoded") == 1
