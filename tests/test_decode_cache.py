"""Decode once (issue 17): an image folder is decoded into one uint8 `.npy` per split beside the
run store, memory-mapped by every process that loads it; a subset is served from a larger decode,
concurrent processes decode once between them, a changed folder is a new file, and the dataset
fingerprint (part of every stored run's address) is what it was before the cache changed."""

from __future__ import annotations

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
    (file,) = (cache / "datasets").iterdir()
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
    assert [p.name.rsplit("-", 1)[1] for p in (cache / "datasets").iterdir()] == ["3.npy"]
    full = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert [p.name.rsplit("-", 1)[1] for p in (cache / "datasets").iterdir()] == ["12.npy"]
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
    (file,) = (cache / "datasets").iterdir()
    damaged = file.with_suffix(".tmp")
    damaged.write_bytes(file.read_bytes()[:-7])  # cut short
    damaged.replace(file)
    assert torch.equal(load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train, first)
    file.write_bytes(b"not an npy")
    assert torch.equal(load_dataset(f"imagefolder:{root}", cache_dir=cache).x_train, first)


def test_the_fingerprint_is_that_of_the_first_cache_layout(tmp_path) -> None:
    """Stored runs are addressed by the fingerprint: recomputed here from its frozen definition."""
    import hashlib
    import json

    root = _folder(tmp_path / "ds")
    ds = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    train = root / "train"
    files = sorted(train.rglob("*.png"), key=lambda p: int(p.stem))
    key = {"version": 1, "root": str(train.resolve()), "split": "train", "decoded": 12, "count": 12,
           "newest_mtime_ns": max(p.stat().st_mtime_ns for p in files),
           "listing": hashlib.sha256("\n".join(str(p.resolve()) for p in files).encode()).hexdigest()}
    part = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    assert ds.fingerprint == hashlib.sha256(part.encode()).hexdigest()[:16]


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
