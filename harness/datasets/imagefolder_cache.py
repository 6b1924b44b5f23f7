"""The per-machine caches of `imagefolder:` datasets: each split's content digest, and its decode as
one memory-mapped `.npy`.

The content digest (`content_digest`) hashes every image's name, label and bytes, so a copied or
moved folder is the same dataset (the fingerprint, and with it every stored run's address, is made
from it), and an edited one is another. Reading 60,000 small files takes seconds, so the digest is
kept under `<cache>/datasets/<stat key>.sha256`, where the stat key hashes the listing with each
file's label, size, mtime and ctime: a folder unchanged since is not read again. The ctime (which no
program can set back) is there because size and mtime were not enough: a file rewritten with the
same size and its old mtime put back (`tar -x`, `cp -p`, `rsync -a` of another version) kept its
stale digest, and the old pixels were served under the old fingerprint. The label is there because
a test split's labels change with the training classes while its files do not.

Decoding 50,000 JPEGs takes ~100 s and every process of an experiment loads the dataset, so a
split is decoded once, stored under `<cache>/datasets/<key>-<count>.npy` (the key made from the
content digest: a copy of the folder reuses it) and memory-mapped by every process after that; a
file holding more images than asked for serves a prefix (`--subset`).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.datasets.pixels import check_depth, is_gray, stack, to_pixels, widen
from harness.errors import HarnessError
from harness.io import atomic_write, exclusive

#: Bumped whenever the cached array layout changes, so stale caches are never read.
#: 2: one memory-mapped .npy per split, any prefix served from it; 3: keyed by content; 4: channel count
#: from the whole split (a prefix decoded gray from a mixed split must not be served again), gray modes
#: "1", "LA" and gray palettes decode to 1 channel (`harness.datasets.pixels`); each file's pixels are
#: hashed into `<key>-<count>.pixels` beside it and checked on every load.
_CACHE_VERSION = 4


@dataclass(frozen=True, eq=False)
class _Split:
    """The listing of one split: files in canonical order, their labels, and a digest of every
    file's path, label, size, mtime and ctime (it changes whenever a file does, without reading any)."""

    root: Path
    files: tuple[Path, ...]
    labels: np.ndarray
    stat_digest: str


def _stat_key(split: _Split, split_name: str) -> str:
    key = {"version": 2, "root": str(split.root), "split": split_name, "count": len(split.files),
           "stats": split.stat_digest}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def content_digest(split: _Split, split_name: str, cache_dir: Path) -> str:
    """SHA-256 over every image's path within the split, label and bytes, in canonical order.

    Read from the cache when the folder is unchanged since it was hashed (same stat key); a cache
    folder that cannot be written costs a rehash per load, never an error."""
    index = cache_dir / "datasets" / f"{_stat_key(split, split_name)}.sha256"
    try:
        known = index.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", known):
            return known
    except OSError:
        pass
    digest = _hash_contents(split)
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(index, lambda tmp: tmp.write_text(digest + "\n"))
    except OSError:
        pass
    return digest


def _hash_contents(split: _Split) -> str:
    total = hashlib.sha256()
    for file, label in zip(split.files, split.labels, strict=True):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise HarnessError(f"cannot read image {file}: {exc}; remove the file or fix it") from exc
        name = file.relative_to(split.root).as_posix()
        total.update(f"{name}\t{int(label)}\t{hashlib.sha256(data).hexdigest()}\n".encode())
    return total.hexdigest()


def _decode_key(split_name: str, content: str) -> str:
    key = {"version": _CACHE_VERSION, "split": split_name, "content": content}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _cached_decode(split: _Split, split_name: str, content: str, count: int, cache_dir: Path) -> np.ndarray:
    """The first `count` images of a split as one (N, C, H, W) uint8 array, decoded once per machine.

    Decoding 50,000 JPEGs takes ~100 s, and every process of an experiment (each pool worker, each
    Ray worker on this machine) loads the dataset: so the decoded array is stored once as a `.npy`
    beside the run store and memory-mapped, and all processes share its pages (copy-on-write: a
    write to the array stays in the writing process). A cache holding more images than asked for
    serves a prefix, so a `--subset` run reuses the full decode; a lock lets one process decode
    while the others wait for its file instead of decoding too."""
    folder = cache_dir / "datasets"
    key = _decode_key(split_name, content)
    cached = _read_cache(folder, key, count)
    if cached is not None:
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = exclusive(folder / f"{key}.lock")
        lock.__enter__()
    except OSError:  # a cache folder we cannot write: decode in this process, every time
        return _decode_split(split, count)
    try:
        cached = _read_cache(folder, key, count)  # decoded by another process while we waited
        if cached is not None:
            return cached
        x = _decode_split(split, count)
        if _write_cache(folder / f"{key}-{count}.npy", x):
            for smaller in _cache_files(folder, key):  # a prefix of the new file: ours to remove
                if smaller[0] < count:
                    smaller[1].unlink(missing_ok=True)
                    _digest_file(smaller[1]).unlink(missing_ok=True)
            mapped = _read_cache(folder, key, count) if len(x) else None  # shared pages, unless unreadable back
            return x if mapped is None else mapped
        return x
    finally:
        lock.__exit__(None, None, None)


def _cache_files(folder: Path, key: str) -> list[tuple[int, Path]]:
    """(images held, file) of every cache file of a split, largest first."""
    found = []
    for file in folder.glob(f"{key}-*.npy"):
        held = file.name[len(key) + 1 : -len(".npy")]
        if held.isdigit():
            found.append((int(held), file))
    return sorted(found, reverse=True)


def _read_cache(folder: Path, key: str, count: int) -> np.ndarray | None:
    """The first `count` images from the largest cache file of the split, memory-mapped; a missing,
    unreadable, mismatched or damaged file is a miss, never an error. Damaged: its pixels' hash is
    not the one written beside it (a disk error, a stray write): runs trained on it would be stored
    under the dataset's true fingerprint, so the pixels are checked on every load (0.1 s for the
    50,000 CIFAR-10 images)."""
    for held, file in _cache_files(folder, key):
        if held < count:
            return None
        try:
            x = np.load(file, mmap_mode="c", allow_pickle=False)
            expected = _digest_file(file).read_text().strip()
        except (OSError, ValueError):
            continue
        if x.dtype == np.uint8 and x.ndim == 4 and len(x) == held:
            if _pixels_digest(x) == expected:
                return x[:count]
            warnings.warn(f"dataset cache {file} is damaged (its pixels do not match their hash); decoding the "
                          "images again", stacklevel=3)
    return None


def _digest_file(file: Path) -> Path:
    return file.with_suffix(".pixels")  # the SHA-256 of the pixels (not "*.sha256": the content digests)


def _pixels_digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).data.cast("B")).hexdigest()


def _write_cache(file: Path, x: np.ndarray) -> bool:
    """Write atomically so concurrent runs never read half a file; failing to cache is not fatal."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare path
            np.save(f, x, allow_pickle=False)

    try:  # the hash first: a cache file without its hash is a miss, never served unchecked
        atomic_write(_digest_file(file), lambda tmp: tmp.write_text(_pixels_digest(x) + "\n"))
        atomic_write(file, write)
        return True
    except OSError as exc:
        warnings.warn(
            f"could not write dataset cache {file}: {exc}; images will be decoded again next run",
            stacklevel=3,
        )
        return False


def _refuse(problems: list[str], fix: str) -> None:
    """One HarnessError naming every image that cannot be used (the first ten, and how many)."""
    if len(problems) == 1:
        raise HarnessError(f"{problems[0]}; {fix}")
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise HarnessError(f"{len(problems)} images cannot be used: {'; '.join(problems[:10])}{more}; {fix}")


def _decode_split(split: _Split, count: int) -> np.ndarray:
    """The first `count` images of a split with the channel count of the whole split.

    Gray (1 channel) only when every image of the split is gray: deciding from the decoded prefix
    made `--subset 2` of a mixed folder gray on a fresh cache and RGB when served from a full decode,
    under one fingerprint. The images past the prefix are checked from their headers (PIL reads
    pixels lazily), so a wide mode anywhere in the split is refused whatever the subset."""
    rest_gray = _all_gray(split.files[count:])
    x = _decode_images(split.files[:count])
    return x if rest_gray else widen(x)


def _all_gray(files: Sequence[Path]) -> bool:
    """Every image is gray (`is_gray`); refuses any image whose mode does not fit 8 bits."""
    from PIL import Image, UnidentifiedImageError

    gray, bad = True, []
    for file in files:
        try:
            with Image.open(file) as img:
                check_depth(img.mode, f"image {file}")
                gray = gray and is_gray(img)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            bad.append(_cannot_decode(file, exc))
    _refuse(bad, "remove or replace the file")
    return gray


def _cannot_decode(file: Path, exc: Exception) -> str:
    """One image's problem, for `_refuse`. PIL's DecompressionBombError (a header claiming more than
    ~179 million pixels, a damaged file or a huge photo) is no OSError: it ended the run in a traceback."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return (f"cannot decode image {file}: its header claims more pixels than PIL decodes safely ({exc}); if it "
                f"is a real photo, resize it (every image must have the dataset's one size)")
    return f"cannot decode image {file}: {exc}"


def _decode_images(files: Sequence[Path]) -> np.ndarray:
    """Decode images to one (N, C, H, W) uint8 array: 1 channel if every image is gray, else RGB
    (the rule of `harness.datasets.pixels`, shared with `hf:`); a mode wider than 8 bits is refused.
    Every image that cannot be used is named in one error (one run per bad file, before), and the
    size is the most common one, so one odd first image does not make all the others wrong."""
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    decoded: list[Path] = []
    bad: list[str] = []
    for file in files:
        try:
            with Image.open(file) as img:
                arrays.append(to_pixels(img, f"image {file}"))
                decoded.append(file)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            bad.append(_cannot_decode(file, exc))
    fix = "remove or replace the file" + ("s that cannot be decoded" if len(bad) > 1 else "")
    sizes = Counter(arr.shape[:2] for arr in arrays)
    if len(sizes) > 1:
        (h, w), _ = sizes.most_common(1)[0]
        first = next(f for f, arr in zip(decoded, arrays) if arr.shape[:2] == (h, w))
        bad += [f"image {f} is {arr.shape[1]}x{arr.shape[0]} but {first} is {w}x{h}"
                for f, arr in zip(decoded, arrays) if arr.shape[:2] != (h, w)]
        fix = (f"{fix}; " if bad[:1] and bad[0].startswith("cannot decode") else "") + (
            f"all images of an imagefolder dataset must have one size: resize it to {w}x{h} (PIL: "
            f"img.resize(({w}, {h}))) or remove it")
    _refuse(bad, fix)
    if not arrays:
        return np.zeros((0, 3, 0, 0), dtype=np.uint8)
    return stack(arrays)
