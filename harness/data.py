"""Datasets held in memory as uint8 tensors, in a canonical training order.

Every proxy returns one score per training sample aligned with the dataset's canonical order, and
published reference scores (Feldman & Zhang, C-scores) are indexed by the *original* training
order. So the order of `x_train` is part of the contract, not an implementation detail: it must be
the same on every machine, every run, with and without `--subset`.

Images stay uint8 (N, C, H, W) so that even CIFAR-scale data fits on a GPU as one tensor;
normalization happens later, batched, on the device. Features that are not images (`npz:` files of
tabular or pre-processed data) are float32 (N, D, 1, 1): every feature is a "channel", so the same
per-channel normalization standardizes each feature.

Loaders live in one registry, `DATASETS`; a loader registered with `takes_path=True` is selected as
`NAME:PATH` (`imagefolder:/data/cifar10`, `npz:/data/table.npz`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.io import atomic_write, exclusive, file_sha256
from harness.registry import Registry

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetLoader",
    "LoadRequest",
    "dataset_names",
    "default_cache_dir",
    "default_data_root",
    "load_dataset",
    "register_dataset",
]

#: Bumped whenever the cached array layout changes, so stale caches are never read.
_CACHE_VERSION = 2  # 2: one memory-mapped .npy per split, any prefix served from it

#: Test images kept when `subset` is set: enough for a stable accuracy, but bounded so that a
#: small subset of a big folder does not decode the whole test split.
_MIN_TEST_WITH_SUBSET = 1000

_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_TORCHVISION = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
}

@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on tensors is ambiguous
class Dataset:
    """A labelled train/test split; `x_train[i]` is sample i in the canonical order."""

    name: str
    #: (N, C, H, W) uint8 images, (N, D, 1, 1) float32 features, or (N, L, 1, 1) int64 token ids
    #: (text, `hf:` loader: tokenizer id + 1, 0 = padding; never normalised or augmented); canonical order
    x_train: torch.Tensor
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, ...) like x_train (M may be 0: no test split)
    y_test: torch.Tensor  # (M,) int64
    classes: tuple[str, ...]
    full_train_size: int  # training-set length before --subset
    #: Content identity of a file-backed dataset (npz: SHA-256 of the file; imagefolder: its listing
    #: and mtimes), "" for the built-in ones: the same name with other contents is another dataset.
    fingerprint: str = ""

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a training loop, when a loader is wrong.
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            tokens = x.dtype == torch.int64 and x.dim() == 4 and tuple(x.shape[2:]) == (1, 1)
            if (x.dtype not in (torch.uint8, torch.float32) and not tokens) or x.dim() != 4:
                raise HarnessError(
                    f"{self.name}: x_{split} must be uint8 images (N, C, H, W), float32 features "
                    f"(N, D, 1, 1) or int64 token ids (N, L, 1, 1), got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise HarnessError(
                    f"{self.name}: y_{split} must be int64 of length {x.shape[0]}, got {y.dtype} {tuple(y.shape)}"
                )
        if self.x_test.shape[0] and self.x_test.dtype != self.x_train.dtype:
            raise HarnessError(f"{self.name}: x_test is {self.x_test.dtype} but x_train is {self.x_train.dtype}")
        if self.x_test.shape[0] and self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise HarnessError(
                f"{self.name}: test images are {tuple(self.x_test.shape[1:])} but train images are "
                f"{tuple(self.x_train.shape[1:])}"
            )

    def __repr__(self) -> str:
        # The dataclass default would print every pixel.
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, classes={self.num_classes}, "
            f"full_train_size={self.full_train_size})"
        )

    @property
    def is_image(self) -> bool:
        """uint8 with 1 or 3 channels: something an image grid can show."""
        return self.x_train.dtype == torch.uint8 and self.x_train.shape[1] in (1, 3)

    @property
    def is_tokens(self) -> bool:
        """int64 token ids (N, L, 1, 1): text, fed to the model as is (no normalisation, no augmentation)."""
        return self.x_train.dtype == torch.int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) std of x_train / 255, for input normalization.

        Accumulated in float64 chunks: a float copy of all of CIFAR would take ~600 MB.
        Token ids are not normalised: mean 0, std 1 per position.
        """
        n, c = self.x_train.shape[:2]
        if self.is_tokens:
            return (0.0,) * int(c), (1.0,) * int(c)
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for start in range(0, n, 4096):
            chunk = self.x_train[start : start + 4096].to(device="cpu", dtype=torch.float64) / 255.0
            total += chunk.sum(dim=(0, 2, 3))
            total_sq += chunk.square().sum(dim=(0, 2, 3))
        count = max(1, n * self.x_train.shape[2] * self.x_train.shape[3])
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0)
        return tuple(float(v) for v in mean), tuple(float(v) for v in var.sqrt())


@dataclass(frozen=True)
class LoadRequest:
    """Everything a loader may use; `path` is the part after `NAME:` for loaders that take one."""

    name: str  # as the user gave it, e.g. "npz:/data/table.npz"
    path: str | None
    data_root: Path | None
    download: bool
    subset: int | None
    cache_dir: Path | None

    @property
    def cache(self) -> Path:
        return self.cache_dir.expanduser() if self.cache_dir is not None else default_cache_dir()


@dataclass(frozen=True)
class DatasetLoader:
    load: Callable[[LoadRequest], Dataset]
    description: str
    takes_path: bool = False


DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str, description: str, *, takes_path: bool = False):
    """Decorator: `load(request) -> Dataset` becomes `--dataset NAME` (or `NAME:PATH`)."""

    def wrap(load: Callable[[LoadRequest], Dataset]) -> Callable[[LoadRequest], Dataset]:
        DATASETS.register(name, DatasetLoader(load, description, takes_path))
        return load

    return wrap


def dataset_names() -> list[str]:
    return [f"{name}:PATH" if entry.takes_path else name for name, entry in DATASETS.items()]


def default_cache_dir() -> Path:
    """`$MEMPROX_CACHE`, else ~/.cache/memprox: one place to delete to reclaim disk."""
    env = os.environ.get("MEMPROX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memprox"


def default_data_root() -> Path:
    """Where torchvision datasets live when `--data-root` is not given."""
    return default_cache_dir() / "data"


def load_dataset(
    name: str,
    *,
    data_root: str | Path | None = None,
    download: bool = False,
    subset: int | None = None,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load a dataset by name; `subset=N` keeps the first N training samples in canonical order."""
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or subset <= 0
    ):
        raise HarnessError(f"--subset must be a positive integer, got {subset!r}")
    kind, sep, path = name.partition(":")
    if kind not in DATASETS:
        raise HarnessError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
    entry = DATASETS[kind]
    if entry.takes_path and not path:
        raise HarnessError(f"{kind} needs a path: use --dataset {kind}:/path/to/data")
    if sep and not entry.takes_path:
        raise HarnessError(f"dataset {kind!r} takes no path (got {name!r}); use --dataset {kind}")
    request = LoadRequest(
        name=name,
        path=path or None,
        data_root=Path(data_root).expanduser() if data_root is not None else None,
        download=download,
        subset=subset,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
    )
    try:
        return entry.load(request)
    except OSError as exc:  # a path the OS refuses (too long, a loop of links, no permission, ...)
        where = exc.filename if exc.filename is not None else path or name
        raise HarnessError(f"dataset {name[:200]!r} cannot be read: {exc.strerror or exc} ({str(where)[:200]}); "
                           "check the path and its permissions") from exc


# --------------------------------------------------------------------------------------------
# subset handling shared by all loaders


def _check_subset(name: str, subset: int | None, available: int) -> int:
    """Resolve `subset` to a count; asking for more than exists is a user error, not a clamp."""
    if subset is None:
        return available
    if subset > available:
        raise HarnessError(
            f"--subset {subset} is larger than the {available} training samples of {name}; "
            f"use --subset {available} or less"
        )
    return subset


def _test_count(subset: int | None, available: int) -> int:
    """Test samples to keep: all without a subset, else at most max(1000, subset)."""
    if subset is None:
        return available
    return min(available, max(_MIN_TEST_WITH_SUBSET, subset))


def _make(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
    subset: int | None,
    fingerprint: str = "",
) -> Dataset:
    """Apply `subset` (first N in canonical order) and wrap the arrays as tensors.

    uint8 stays uint8 (images); anything else becomes float32 (features)."""
    full = len(y_train)
    n = _check_subset(name, subset, full)
    m = _test_count(subset, len(y_test))
    dtype = np.uint8 if x_train.dtype == np.uint8 else np.float32
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train[:n], dtype=dtype)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train[:n], dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test[:m], dtype=dtype)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test[:m], dtype=np.int64)),
        classes=tuple(str(c) for c in classes),
        full_train_size=full,
        fingerprint=fingerprint,
    )


# --------------------------------------------------------------------------------------------
# digits


@register_dataset("digits", "scikit-learn's 8x8 handwritten digits (bundled, the default)")
def _load_digits_request(request: LoadRequest) -> Dataset:
    return _load_digits(request.subset)


def _load_digits(subset: int | None) -> Dataset:
    """scikit-learn's 8x8 digits with a fixed stratified 80/20 split (no download, ~1 MB)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, random_state=0, stratify=y
    )
    # Canonical order = ascending original index, independent of the split's shuffle.
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    classes = [str(c) for c in bunch.target_names]
    return _make(
        "digits", images[idx_train], y[idx_train], images[idx_test], y[idx_test], classes, subset
    )


# --------------------------------------------------------------------------------------------
# torchvision datasets


def _torchvision_loader(name: str) -> Callable[[LoadRequest], Dataset]:
    def load(request: LoadRequest) -> Dataset:
        root = request.data_root if request.data_root is not None else default_data_root()
        return _load_torchvision(name, root, request.download, request.subset)

    return load


for _name, _cls in _TORCHVISION.items():
    register_dataset(_name, f"torchvision {_cls} (--data-root, --download)")(_torchvision_loader(_name))


def _load_torchvision(name: str, root: Path, download: bool, subset: int | None) -> Dataset:
    """torchvision datasets are already arrays in their original order, so no cache is needed."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[name])
    splits = []
    for train in (True, False):
        try:
            splits.append(cls(root=str(root), train=train, download=download))
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted ..."
            if download:
                raise HarnessError(
                    f"{name}: files under {root} are unusable after download ({exc}); "
                    f"delete them and retry with --download, or pass --data-root DIR"
                ) from exc
            raise HarnessError(
                f"{name}: dataset files not found under data root {root}; pass --download to fetch "
                f"them there, or --data-root DIR pointing at an existing copy"
            ) from exc
        except OSError as exc:  # network failures (URLError is an OSError)
            raise HarnessError(
                f"{name}: download into {root} failed ({exc}); check the network, or place the files "
                f"there yourself and pass --data-root DIR"
            ) from exc
    tr, te = splits
    return _make(
        name,
        _nchw(tr.data),
        _labels(tr.targets),
        _nchw(te.data),
        _labels(te.targets),
        tr.classes,
        subset,
    )


def _nchw(data: np.ndarray | torch.Tensor) -> np.ndarray:
    """CIFAR stores (N, H, W, C) arrays, MNIST (N, H, W) tensors; unify to (N, C, H, W)."""
    arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim == 3:
        return arr[:, None, :, :]
    return arr.transpose(0, 3, 1, 2)


def _labels(targets: Sequence[int] | torch.Tensor) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        return targets.numpy().astype(np.int64)
    return np.asarray(targets, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# imagefolder


@dataclass(frozen=True, eq=False)
class _Split:
    """The listing of one split: files in canonical order plus what the cache key needs."""

    root: Path
    files: tuple[Path, ...]
    labels: np.ndarray
    newest_mtime_ns: int


@register_dataset("imagefolder", "a folder of class subfolders (optionally train/ and test/)", takes_path=True)
def _load_imagefolder_request(request: LoadRequest) -> Dataset:
    assert request.path is not None  # load_dataset checked it
    return _load_imagefolder(request.name, Path(request.path).expanduser(), request.subset, request.cache)


def _load_imagefolder(name: str, path: Path, subset: int | None, cache_dir: Path) -> Dataset:
    path = path.resolve()
    if not path.is_dir():
        raise HarnessError(
            f"{name}: folder {path} does not exist; pass imagefolder:PATH with an existing folder"
        )
    train_dir, test_dir = path, None
    if (path / "train").is_dir():
        train_dir = path / "train"
        test_dir = path / "test" if (path / "test").is_dir() else None
    classes = _class_names(train_dir)
    if not classes:
        raise HarnessError(
            f"{name}: {train_dir} has no class subfolders; expected {train_dir}/<class>/<image>"
        )
    class_to_idx = {c: i for i, c in enumerate(classes)}

    seen: dict[str, Path] = {}  # resolved image -> where it was listed: no image counts twice
    train = _list_split(train_dir, class_to_idx, path, seen)
    if not train.files:
        raise HarnessError(
            f"{name}: no images ({', '.join(_IMG_EXTENSIONS)}) under {train_dir}; "
            f"expected {train_dir}/<class>/<image>"
        )
    n = _check_subset(name, subset, len(train.files))
    x_train = _cached_decode(train, "train", n, cache_dir)
    identity = [_identity_key(train, "train")]

    if test_dir is not None:
        test = _list_split(test_dir, class_to_idx, path, seen)
        identity.append(_identity_key(test, "test"))
        m = _test_count(subset, len(test.files))
        x_test = _cached_decode(test, "test", m, cache_dir) if m else _empty_like(x_train)
        y_test = test.labels[:m]
    else:
        x_test, y_test = _empty_like(x_train), np.zeros(0, dtype=np.int64)

    x_train, x_test = _match_channels(x_train, x_test)
    if len(x_test) and x_test.shape[1:] != x_train.shape[1:]:
        raise HarnessError(
            f"{name}: test images ({test_dir}) are {x_test.shape[2]}x{x_test.shape[3]} but training "
            f"images are {x_train.shape[2]}x{x_train.shape[3]}; resize them to one size"
        )
    return Dataset(
        name=name,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(np.ascontiguousarray(train.labels[:n], dtype=np.int64)),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        classes=tuple(classes),
        full_train_size=len(train.files),
        fingerprint=hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16],
    )


def _class_names(root: Path) -> list[str]:
    """Sorted subfolder names, as torchvision's ImageFolder, so label ids agree with it."""
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise HarnessError(f"cannot list folder {root}: {exc}; check that it exists and is readable") from exc


def _list_split(root: Path, class_to_idx: dict[str, int], tree: Path, seen: dict[str, Path]) -> _Split:
    """List a split's images and put them in canonical order.

    Integer stems are the samples' original indices (`00042.jpg` is sample 42), so that order is
    used when every stem is an integer and no two collide; otherwise ImageFolder's (class, path)
    order, which is deterministic but carries no meaning beyond that.

    Symbolic links: every sample must be counted once, so a folder link that leads back into
    `tree` (the dataset folder), to an ancestor, or to a folder already listed is not followed
    (a `loop -> .` once turned 20 images into 420 samples), and a file reached twice (through a
    link, in this split or in `seen`, resolved image -> listed path, shared by both splits) is
    refused: a duplicate sample, or a test image that is also a training image. Links to files
    and folders elsewhere are followed: datasets assembled from links are common.
    """
    tree = tree.resolve()
    entries: list[tuple[str, str, Path, int]] = []  # (class, relative path, path, label)
    newest = 0
    unknown = sorted(set(_class_names(root)) - set(class_to_idx))
    if unknown:
        raise HarnessError(
            f"{root} has class folders {unknown} that the training split lacks; "
            f"the test split may only use the training classes {sorted(class_to_idx)}"
        )
    for cls in sorted(class_to_idx):
        cls_dir = root / cls
        if not cls_dir.is_dir():
            continue
        for file, real in _image_files(cls_dir, tree):
            if real in seen:
                raise HarnessError(
                    f"image {real} is reached twice, as {seen[real]} and as {file} (through a symbolic "
                    f"link); every sample must occur once: remove one of the links, or copy the file if "
                    f"the duplicate is intended"
                )
            seen[real] = file
            try:
                newest = max(newest, file.stat().st_mtime_ns)
            except OSError as exc:
                raise HarnessError(f"cannot read image {file}: {exc}; remove the file or fix it") from exc
            entries.append((cls, file.relative_to(cls_dir).as_posix(), file, class_to_idx[cls]))
    entries.sort(key=lambda e: (e[0], e[1]))
    stems = [e[2].stem for e in entries]
    if (
        entries
        and all(re.fullmatch(r"\d+", s) for s in stems)
        and len({int(s) for s in stems}) == len(stems)
    ):
        order = sorted(range(len(entries)), key=lambda i: int(stems[i]))
        entries = [entries[i] for i in order]
    return _Split(
        root=root,
        files=tuple(e[2] for e in entries),
        labels=np.array([e[3] for e in entries], dtype=np.int64),
        newest_mtime_ns=newest,
    )


def _image_files(top: Path, tree: Path) -> list[tuple[Path, str]]:
    """Image files under `top` (not hidden, by extension) with their resolved paths, following
    only safe folder links.

    A subfolder is skipped, with a warning, when it is a link that resolves inside `tree` or to
    an ancestor of the folder holding it, or when it resolves to a folder already listed:
    following it would count images twice or never end. `top` itself is always listed (a class
    folder linked to another class folder is caught file by file, as images reached twice).
    An image-named entry that is not a readable file (a link to a missing file) is an error.
    """
    files: list[tuple[Path, str]] = []
    listed: set[str] = set()
    stack: list[tuple[Path, str | None]] = [(top, None)]  # (folder, resolved parent; None for top)
    while stack:
        folder, parent = stack.pop()
        here = os.path.realpath(folder)
        reason = _skip_reason(folder, here, parent, tree, listed) if parent is not None else None
        if reason:
            warnings.warn(
                f"not following folder link {folder} -> {here}: it {reason}, so its images would count "
                f"twice; remove the link to silence this",
                stacklevel=6,  # the caller of load_dataset
            )
            continue
        listed.add(here)
        try:
            listing = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise HarnessError(f"cannot list folder {folder}: {exc}; check that it is readable") from exc
        subfolders = []
        for entry in listing:
            path = Path(entry.path)
            if entry.is_dir():  # follows links; which ones to enter is decided when popped
                subfolders.append((path, here))
            elif not entry.name.startswith(".") and entry.name.lower().endswith(_IMG_EXTENSIONS):
                if not entry.is_file():
                    raise HarnessError(
                        f"image {path} is not a readable file (a link to a missing file?); remove it or "
                        f"fix its target"
                    )
                # one realpath per folder, not per file: only a linked file needs its own
                files.append((path, os.path.realpath(path) if entry.is_symlink() else os.path.join(here, entry.name)))
        stack.extend(reversed(subfolders))
    return files


def _skip_reason(folder: Path, here: str, parent: str, tree: Path, listed: set[str]) -> str | None:
    """Why subfolder `folder` (resolved: `here`, inside resolved `parent`) must not be listed."""
    link = folder.is_symlink()
    if link and _inside(parent, here):
        return "points to a folder that contains it (a loop)"
    if link and _inside(here, str(tree)):
        return "points back into the dataset folder"
    if here in listed:
        return "resolves to a folder already listed"
    return None


def _inside(path: str, folder: str) -> bool:
    """`path` is `folder` or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _identity_key(split: _Split, split_name: str) -> str:
    """A split's part of the dataset fingerprint: its path, files and their mtimes. Frozen: the
    fields and their values are those of the first cache layout, so fingerprints, and with them
    every stored run's address, stay the same when the cache changes."""
    listing = hashlib.sha256("\n".join(str(f) for f in split.files).encode()).hexdigest()
    key = {
        "version": 1,
        "root": str(split.root),
        "split": split_name,
        "decoded": len(split.files),
        "count": len(split.files),
        "newest_mtime_ns": split.newest_mtime_ns,
        "listing": listing,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _split_key(split: _Split, split_name: str) -> str:
    listing = hashlib.sha256("\n".join(str(f) for f in split.files).encode()).hexdigest()
    key = {
        "version": _CACHE_VERSION,
        "root": str(split.root),
        "split": split_name,
        "count": len(split.files),
        "newest_mtime_ns": split.newest_mtime_ns,
        "listing": listing,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _cached_decode(split: _Split, split_name: str, count: int, cache_dir: Path) -> np.ndarray:
    """The first `count` images of a split as one (N, C, H, W) uint8 array, decoded once per machine.

    Decoding 50,000 JPEGs takes ~100 s, and every process of an experiment (each pool worker, each
    Ray worker on this machine) loads the dataset: so the decoded array is stored once as a `.npy`
    beside the run store and memory-mapped, and all processes share its pages (copy-on-write: a
    write to the array stays in the writing process). A cache holding more images than asked for
    serves a prefix, so a `--subset` run reuses the full decode; a lock lets one process decode
    while the others wait for its file instead of decoding too."""
    folder = cache_dir / "datasets"
    key = _split_key(split, split_name)
    cached = _read_cache(folder, key, count)
    if cached is not None:
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = exclusive(folder / f"{key}.lock")
        lock.__enter__()
    except OSError:  # a cache folder we cannot write: decode in this process, every time
        return _decode_images(split.files[:count])
    try:
        cached = _read_cache(folder, key, count)  # decoded by another process while we waited
        if cached is not None:
            return cached
        x = _decode_images(split.files[:count])
        if _write_cache(folder / f"{key}-{count}.npy", x):
            for smaller in _cache_files(folder, key):  # a prefix of the new file: ours to remove
                if smaller[0] < count:
                    smaller[1].unlink(missing_ok=True)
            return _read_cache(folder, key, count) if len(x) else x
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
    unreadable or mismatched file is a miss, never an error."""
    for held, file in _cache_files(folder, key):
        if held < count:
            return None
        try:
            x = np.load(file, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if x.dtype == np.uint8 and x.ndim == 4 and len(x) == held:
            return x[:count]
    return None


def _write_cache(file: Path, x: np.ndarray) -> bool:
    """Write atomically so concurrent runs never read half a file; failing to cache is not fatal."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare path
            np.save(f, x, allow_pickle=False)

    try:
        atomic_write(file, write)
        return True
    except OSError as exc:
        warnings.warn(
            f"could not write dataset cache {file}: {exc}; images will be decoded again next run",
            stacklevel=3,
        )
        return False


def _decode_images(files: Sequence[Path]) -> np.ndarray:
    """Decode images to one (N, C, H, W) uint8 array; 1 channel if every image is grayscale."""
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    for file in files:
        try:
            with Image.open(file) as img:
                img = img.convert("L") if img.mode == "L" else img.convert("RGB")
                arr = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise HarnessError(
                f"cannot decode image {file}: {exc}; remove or replace the file"
            ) from exc
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise HarnessError(
                f"image {file} is {arr.shape[1]}x{arr.shape[0]} but {files[0]} is {size[1]}x{size[0]}; "
                f"all images of an imagefolder dataset must have one size"
            )
        arrays.append(arr)
    if not arrays:
        return np.zeros((0, 3, 0, 0), dtype=np.uint8)
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[:, None, :, :]
    # Mixed modes: replicate gray to RGB, which is exactly what PIL's convert("RGB") does for "L".
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2))


def _match_channels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """If one split decoded as gray and the other as RGB, widen the gray one to RGB."""
    if not len(x_test):
        return x_train, _empty_like(x_train)
    if x_train.shape[1] != x_test.shape[1]:
        return _widen(x_train), _widen(x_test)
    return x_train, x_test


def _widen(x: np.ndarray) -> np.ndarray:
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x


def _empty_like(x: np.ndarray) -> np.ndarray:
    return np.zeros((0, *x.shape[1:]), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# npz: any array data set


@register_dataset(
    "npz",
    "a .npz with x (N, ...) and y (N,) class ids 0..C-1; optional x_test/y_test and classes (names)",
    takes_path=True,
)
def _load_npz(request: LoadRequest) -> Dataset:
    """Arrays in their stored order are the canonical order (sample i is x[i]).

    x may be (N, D) features (become float32 (N, D, 1, 1)), (N, H, W) gray images or (N, C, H, W)
    images; uint8 stays uint8 (images), any other real dtype becomes float32 and must be finite.
    Without a `classes` array the classes are 0..max(y), and every one of them must occur in y.
    No decode cache: reading the arrays is as fast as reading a cache would be. The file's SHA-256
    is the dataset's fingerprint, so an edited file is a different dataset.
    """
    assert request.path is not None  # load_dataset checked it
    name = request.name
    path = Path(request.path).expanduser().resolve()
    if not path.is_file():
        raise HarnessError(f"{name}: file {path} does not exist; pass npz:PATH with an existing .npz file")
    arrays = _read_npz(name, path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise HarnessError(
            f"{name}: {path} lacks array(s) {missing} (it has {sorted(arrays) or 'none'}); "
            f"save it with numpy.savez(path, x=features, y=labels)"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise HarnessError(f"{name}: {path} has only one of x_test and y_test; save both or neither")
    x = _npz_features(name, "x", arrays["x"])
    y = _npz_labels(name, "y", arrays["y"], len(x))
    has_test = "x_test" in arrays
    x_test = _npz_features(name, "x_test", arrays["x_test"], allow_empty=True) if has_test else x[:0]
    y_test = _npz_labels(name, "y_test", arrays["y_test"], len(x_test)) if has_test else y[:0]
    if x_test.shape[1:] != x.shape[1:] and len(x_test):
        raise HarnessError(
            f"{name}: x_test samples are {x_test.shape[1:]} but x samples are {x.shape[1:]}; save them with one shape"
        )
    if x.dtype != x_test.dtype:  # uint8 images in one split, real values in the other: compare as floats
        x, x_test = x.astype(np.float32), x_test.astype(np.float32)
    classes = _npz_classes(name, arrays.get("classes"), y, y_test)
    return _make(name, x, y, x_test, y_test, classes, request.subset, fingerprint=file_sha256(path)[:16])


def _read_npz(name: str, path: Path) -> dict[str, np.ndarray]:
    """The archive's arrays, read without unpickling, after checking each member's header: a zip of
    other files, an object array or a header that promises more data than the member holds is a
    clear error before anything is allocated."""
    save_hint = "save it with numpy.savez(path, x=features, y=labels)"
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise HarnessError(f"{name}: {path} holds a single array, not an .npz archive; {save_hint}")
    if not magic.startswith(b"PK"):  # np.load would try to unpickle anything else
        raise HarnessError(f"{name}: cannot read {path} as a .npz file (not a zip archive); {save_hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_npz_member(name, path, archive, info, save_hint)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except HarnessError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{name}: cannot read {path} as a .npz file ({exc}); {save_hint}") from exc


def _check_npz_member(name: str, path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                      save_hint: str) -> None:
    """One member must be a .npy array of a plain dtype whose data fits in the member."""
    member = info.filename
    if info.is_dir():
        return
    if not member.endswith(".npy"):
        raise HarnessError(f"{name}: {path} is a zip archive, but its member {member!r} is not a numpy array "
                           f"(.npy); {save_hint}")
    with archive.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # rarer header versions: np.load still checks the data's length
                return
        except ValueError as exc:
            raise HarnessError(f"{name}: member {member!r} of {path} is not a numpy array ({exc}); "
                               f"{save_hint}") from exc
        header = f.tell()
    if dtype.hasobject:  # object arrays need pickle, which a data file must not run
        raise HarnessError(f"{name}: {path} holds an object array ({member!r}); save numeric arrays only")
    needed = math.prod(shape) * dtype.itemsize
    if needed > info.file_size - header:
        raise HarnessError(f"{name}: member {member!r} of {path} declares shape {shape} ({needed:,} bytes) but "
                           f"holds {info.file_size - header:,} bytes: the file is damaged; save it again")


def _npz_features(name: str, key: str, x: np.ndarray, allow_empty: bool = False) -> np.ndarray:
    """Bring x to (N, C, H, W): uint8 stays as is, other real dtypes become finite float32."""
    if x.ndim < 2 or x.ndim > 4:
        raise HarnessError(
            f"{name}: {key} has shape {x.shape}; expected (N, D) features, (N, H, W) or (N, C, H, W) images"
        )
    if (len(x) == 0 and not allow_empty) or (len(x) and x.size == 0):
        raise HarnessError(f"{name}: {key} is empty (shape {x.shape}); it needs at least one sample and one feature")
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
            raise HarnessError(f"{name}: {key} has dtype {x.dtype}; save real numbers (float32, or uint8 images)")
        x = x.astype(np.float32)
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise HarnessError(
                f"{name}: {key} has NaN or inf in {len(bad)} sample(s) (first: {bad[:5].tolist()}); "
                f"drop or impute them before saving"
            )
    if x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        raise HarnessError(
            f"{name}: {key} has shape {x.shape}, which looks channels-last (N, H, W, C); "
            f"save x.transpose(0, 3, 1, 2) (channels first)"
        )
    if x.ndim == 2:
        return x[:, :, None, None]
    if x.ndim == 3:
        return x[:, None, :, :]
    return x


def _npz_labels(name: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise HarnessError(f"{name}: {key} has shape {y.shape} but must be ({n},), one class id per sample")
    if not np.issubdtype(y.dtype, np.integer):
        raise HarnessError(
            f"{name}: {key} has dtype {y.dtype} but must hold integer class ids 0..C-1; save "
            f"{key}.astype(np.int64), or np.unique({key}, return_inverse=True)[1] for arbitrary labels"
        )
    if len(y) and y.dtype.kind == "u" and int(y.max()) > np.iinfo(np.int64).max:
        raise HarnessError(f"{name}: {key} has class id {int(y.max())}; class ids must be 0..C-1")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise HarnessError(f"{name}: {key} has negative class id {int(y.min())}; class ids must be 0..C-1")
    return y


def _npz_classes(name: str, classes: np.ndarray | None, y: np.ndarray, y_test: np.ndarray) -> list[str]:
    """Class names from `classes`, else 0..max(y); every id must be a class, every class must train."""
    if classes is not None:
        if classes.ndim != 1 or len(classes) < 2:
            raise HarnessError(f"{name}: classes must be a 1-D array of at least 2 names, got shape {classes.shape}")
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist()]
        if len(set(names)) != len(names):
            raise HarnessError(f"{name}: classes has duplicate names; give every class a distinct name")
        top = max(int(y.max()), int(y_test.max()) if len(y_test) else 0)
        if top >= len(names):
            raise HarnessError(
                f"{name}: class id {top} is out of range for {len(names)} classes; ids must be 0..{len(names) - 1}"
            )
        return names
    num = int(y.max()) + 1
    if num > len(y):  # checked before anything of size num is allocated (a huge id once asked for 8 TiB)
        raise HarnessError(
            f"{name}: y has class id {num - 1} but only {len(y)} samples, so not every class 0..{num - 1} can "
            f"occur; class ids must be 0..C-1: remap with np.unique(y, return_inverse=True)[1], or save a "
            f"classes array naming all classes"
        )
    if len(y_test) and int(y_test.max()) >= num:
        raise HarnessError(
            f"{name}: y_test has class id {int(y_test.max())} but y only has ids up to {num - 1}; "
            f"every test class must occur in training (or save a classes array naming all of them)"
        )
    absent = np.setdiff1d(np.arange(num), y)
    if len(absent):
        raise HarnessError(
            f"{name}: y must use class ids 0..C-1 with every class present, but {absent[:10].tolist()} never occur; "
            f"remap with np.unique(y, return_inverse=True)[1], or save a classes array naming all classes"
        )
    if num < 2:
        raise HarnessError(f"{name}: y has a single class; a classifier needs at least 2")
    return [str(c) for c in range(num)]



# `hf:PATH` (a Hugging Face dataset saved with save_to_disk) lives in its own module; importing it
# registers the loader. It imports `datasets` only when such a dataset is loaded (extra `hf`).
from harness import hf_data as _hf_data  # noqa: E402,F401
