"""dq30: an image whose header claims more pixels than PIL decodes safely (a damaged file, or a huge
photo) raised PIL's DecompressionBombError, which is no OSError: `--dataset imagefolder:` ended in a
traceback with exit 1, naming no fix. It must be a HarnessError naming the file, like any file that
does not decode, whether the image is decoded or only its header read (past a `--subset`)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import load_dataset
from harness.errors import HarnessError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb(path: Path) -> None:
    """A 400-byte PNG whose header says 20,000 x 20,000 gray pixels (400 million)."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + _chunk(b"IEND", b""))


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{c}{i}.png")
    _bomb(root / "b" / "b9.png")  # last in (class, path) order: past --subset 2
    return root


@pytest.mark.parametrize("subset", [None, 2])
def test_an_image_over_the_decompression_limit_is_named(tmp_path, subset) -> None:
    root = _folder(tmp_path / "d")
    with pytest.raises(HarnessError, match=r"cannot decode image .*b9\.png: its header claims more pixels") as caught:
        load_dataset(f"imagefolder:{root}", subset=subset, cache_dir=tmp_path / "cache")
    assert "400000000 pixels" in str(caught.value) and "remove or replace the file" in str(caught.value)


def test_the_cli_refuses_it_without_a_traceback(tmp_path) -> None:
    root = _folder(tmp_path / "d")
    env = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--dataset", f"imagefolder:{root}", "--tasks",
                           "suspects", "--proxies", "csl", "--seeds", "1", "--epochs", "1", "--out",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "b9.png" in proc.stderr


def test_one_class_folder_says_how_to_add_the_others(tmp_path) -> None:
    """The single-class error of an image folder named no fix ("a classifier needs at least 2")."""
    root = tmp_path / "d"
    (root / "cat").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8)).save(root / "cat" / f"{i}.png")
    with pytest.raises(HarnessError) as caught:
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    assert str(caught.value) == (
        f"imagefolder:{root}: the training labels hold a single class ('cat'); a classifier needs at least 2: put "
        f"each other class's images in a folder of its own beside {root / 'cat'} ({root}/<class>/<image>)")


def test_a_macos_zip_folder_is_neither_a_class_nor_samples(tmp_path) -> None:
    """A folder unzipped from a macOS archive holds `__MACOSX/<class>/._x.jpg` (metadata): it was refused
    as a class of no images, with a warning to rename its files into samples."""
    import warnings

    root = _folder(tmp_path / "d")
    (root / "b" / "b9.png").unlink()
    plain = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    for where in (root / "__MACOSX" / "a", root / "b" / "__MACOSX"):
        where.mkdir(parents=True)
        (where / "._a0.png").write_bytes(b"\0\5\26\7")
        (where / "a1.png").write_bytes(b"\0\5\26\7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zipped = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    assert zipped.classes == ("a", "b")
    assert zipped.sample_names == plain.sample_names and zipped.fingerprint == plain.fingerprint
