"""The loader registry and the subset rules every loader shares; the `Dataset` type they return is
`harness.datasets.dataset`'s, re-exported here (`from harness.datasets.base import Dataset`).

Datasets are held in memory as tensors in a canonical training order. Every proxy returns one score
per training sample aligned with that order, and published reference scores (Feldman & Zhang,
C-scores) are indexed by the *original* training order: so the order of `x_train` is part of the
contract, the same on every machine, every run, with and without `--subset`.

Images stay uint8 (N, C, H, W) so that CIFAR-scale data fits on a GPU as one tensor; normalization
happens later, batched, on the device. Features that are not images (`npz:` files) are float32
(N, D, 1, 1): every feature is a "channel", so per-channel normalization standardizes each feature.

Loaders live in one registry, `DATASETS`; a loader registered with `takes_path=True` is selected as
`NAME:PATH` (`imagefolder:/data/cifar10`, `npz:/data/table.npz`). Each built-in loader is a module of
this package that registers itself when `harness.datasets` is imported. Other packages add datasets
through the `memprox.datasets` entry-point group, e.g.
`[project.entry-points."memprox.datasets"] blobs = "my_pkg.blobs"`: the entry point names a module
(or an object in it) whose import registers the dataset with `register_dataset`; it is imported the
first time that name is loaded, in every process (worker processes included).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import harness.registry as registry  # for did_you_mean: a leaf module, as tests/test_datasets_package.py asks
from harness.datasets.content import with_content_fingerprint
from harness.datasets.dataset import Dataset
from harness.datasets.names import path_hint
from harness.errors import HarnessError, SubsetTooLarge
from harness.registry import Registry, installed_plugins, load_failure
from harness.values import expand_home

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


#: Test images kept when `subset` is set: enough for a stable accuracy, but bounded so that a
#: small subset of a big folder does not decode the whole test split.
_MIN_TEST_WITH_SUBSET = 1000


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
        return expand_home(self.cache_dir, "cache_dir") if self.cache_dir is not None else default_cache_dir()


@dataclass(frozen=True)
class DatasetLoader:
    load: Callable[[LoadRequest], Dataset]
    description: str
    takes_path: bool = False


ENTRY_POINT_GROUP = "memprox.datasets"
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str, description: str, *, takes_path: bool = False):
    """Decorator: `load(request) -> Dataset` becomes `--dataset NAME` (or `NAME:PATH`)."""

    def wrap(load: Callable[[LoadRequest], Dataset]) -> Callable[[LoadRequest], Dataset]:
        DATASETS.register(name, DatasetLoader(load, description, takes_path))
        return load

    return wrap


def dataset_names() -> list[str]:
    """Every name --dataset accepts, `NAME:PATH` for loaders that take a path; installed plugins not
    loaded yet are listed by their bare name (their module is imported only when used)."""
    names = [f"{name}:PATH" if entry.takes_path else name for name, entry in DATASETS.items()]
    return names + sorted(set(_entry_points()) - set(DATASETS))


def registered_here_only(kind: str) -> str | None:
    """The module that registered dataset `kind` when a fresh process would not know it (neither
    memprox's own nor an installed plugin: a loader defined in a script or notebook), else None."""
    entry = DATASETS[kind] if kind in DATASETS else None
    if entry is None or entry.load.__module__.startswith("harness.") or kind in _entry_points():
        return None
    return entry.load.__module__


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed dataset plugins by name; one named like a registered dataset is ignored with a warning."""
    found, withheld = installed_plugins(ENTRY_POINT_GROUP, "dataset")
    DATASETS.withheld.update(withheld)
    for name in [n for n in found if n in DATASETS and DATASETS[n].load.__module__.startswith("harness.")]:
        ep = found.pop(name)
        warnings.warn(f"dataset plugin {ep.name!r} ({ep.value}) is named like a built-in dataset; ignored",
                      stacklevel=3)
    return found


def _load_plugin(kind: str) -> None:
    """Import the plugin that provides dataset `kind`, if one is installed; it registers itself."""
    ep = _entry_points().get(kind)
    if ep is None:
        return
    try:
        ep.load()
    except (Exception, SystemExit) as e:  # the plugin's import error (or a `sys.exit()` there), in one line
        raise HarnessError(load_failure(f"dataset plugin {kind!r} ({ep.value})", e)) from e
    if kind not in DATASETS:
        raise HarnessError(f"dataset plugin {kind!r} ({ep.value}) loaded but registered no dataset {kind!r}; "
                           f"decorate its loader with @register_dataset({kind!r}, ...)")


def default_cache_dir() -> Path:
    """`$MEMPROX_CACHE` (empty: unset), else ~/.cache/memprox: one place to delete to reclaim disk. A
    value with a space at an end (a docker --env-file keeps it) and an empty HOME (`~` is then `/`)
    silently put the run store in a new folder (` /store` in the current one, `/.cache/memprox`)."""
    env = os.environ.get("MEMPROX_CACHE")
    if env and env != env.strip():
        raise HarnessError(f"MEMPROX_CACHE {env!r} begins or ends with white space; set it to the folder's path "
                           "without it, or unset it for ~/.cache/memprox")
    if not env and os.environ.get("HOME") == "":
        raise HarnessError("HOME is set but empty, so the default cache ~/.cache/memprox would be /.cache/memprox; "
                           "set HOME, or MEMPROX_CACHE to a folder for the cache and the run store")
    return expand_home(env or "~/.cache/memprox", "MEMPROX_CACHE" if env else "the default cache")


def not_utf8(what: str, text: str, fix: str) -> HarnessError:
    """The error for a name (`what`, naming it) that is not UTF-8 text. A UTF-8 name that Python read
    as ASCII (LC_ALL=C with PYTHONUTF8=0: its bytes kept as surrogates) is the locale's fault, not
    the name's: renaming a valid `é` folder, as the old message said, could not help."""
    try:
        text.encode(errors="surrogateescape").decode()
    except UnicodeError:  # bytes that are not UTF-8 (a Latin-1 name), or a surrogate no file name holds
        return HarnessError(f"{what} is not valid UTF-8 text; {fix}")
    return HarnessError(f"{what} is UTF-8, but this Python reads names as {sys.getfilesystemencoding()} (the "
                        "locale, e.g. LC_ALL=C, with UTF-8 mode off); rerun with PYTHONUTF8=1 or LC_ALL=C.UTF-8")


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
    try:  # the name is written into every result file: refuse it now, not after training (a Latin-1 folder name)
        name.encode()
    except UnicodeEncodeError:
        raise not_utf8(f"dataset {name!r}", name, "rename it (e.g. with convmv -f latin1 -t utf8)") from None
    kind, sep, path = name.partition(":")
    if kind not in DATASETS:
        _load_plugin(kind)
    DATASETS.check_claimed_once(kind)
    if kind not in DATASETS:
        hint = path_hint(name)  # a path without its kind: that hint, not a name spelt like the path's
        close = "" if hint else registry.did_you_mean([kind], [*DATASETS, *_entry_points()])
        raise HarnessError(f"unknown dataset {name!r}{close}; valid names: {', '.join(dataset_names())}{hint}")
    entry = DATASETS[kind]
    if entry.takes_path and not path:
        raise HarnessError(f"{kind} needs a path: use --dataset {kind}:/path/to/data")
    if sep and not entry.takes_path:
        raise HarnessError(f"dataset {kind!r} takes no path (got {name!r}); use --dataset {kind}")
    request = LoadRequest(
        name=name,
        path=path or None,
        data_root=expand_home(data_root, "--data-root") if data_root is not None else None,
        download=download,
        subset=subset,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
    )
    try:
        return with_content_fingerprint(entry.load(request), entry.load.__module__)
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
        raise SubsetTooLarge(f"--subset {subset} is larger than the {available} training samples of {name}; "
                             f"use --subset {available} or less", available)
    return subset


def _test_count(subset: int | None, available: int) -> int:
    """Test samples to keep: all without a subset, else at most max(1000, subset)."""
    if subset is None:
        return available
    return min(available, max(_MIN_TEST_WITH_SUBSET, subset))


def _round_robin(labels: np.ndarray) -> np.ndarray:
    """Every index, ordered by rank within its class, then by class: the first sample of each class,
    then the second of each, ... (canonical order within a class). Any prefix is as class-balanced
    as the split allows."""
    by_class = np.argsort(labels, kind="stable")
    grouped = labels[by_class]
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - np.searchsorted(grouped, grouped)
    return np.lexsort((labels, rank))


def _test_keep(y_test: np.ndarray, subset: int | None) -> np.ndarray:
    """Ascending indices of the test samples kept: all without a subset, else `_test_count` of them
    taken round robin over the classes. A prefix kept one class of a split stored class by class (an
    image folder's (class, path) order, a Hugging Face dataset built from folders): the offline
    CIFAR-10 copy's first 1,000 test images are all airplanes, so test accuracy measured one class."""
    m = _test_count(subset, len(y_test))
    return np.arange(m) if m == len(y_test) else np.sort(_round_robin(y_test)[:m])


def _make(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
    subset: int | None,
    fingerprint: str = "",
    keep_dtype: bool = False,
) -> Dataset:
    """Apply `subset` (first N in canonical order; test samples by `_test_keep`) and wrap the arrays as tensors.

    uint8 stays uint8 (images); anything else becomes float32 (features), unless `keep_dtype` (`hf:`'s
    int64 token ids)."""
    full = len(y_train)
    n = _check_subset(name, subset, full)
    keep = _test_keep(np.asarray(y_test), subset)
    sel = keep if len(keep) < len(y_test) else slice(None)  # no copy of a test split kept whole
    dtype = x_train.dtype if keep_dtype else np.uint8 if x_train.dtype == np.uint8 else np.float32
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train[:n], dtype=dtype)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train[:n], dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test[sel], dtype=dtype)),
        y_test=torch.from_numpy(np.ascontiguousarray(np.asarray(y_test)[sel], dtype=np.int64)),
        classes=tuple(str(c) for c in classes),
        full_train_size=full,
        fingerprint=fingerprint,
    )


def _require_every_class(name: str, classes: list[str], y: np.ndarray, fix: str) -> None:
    """Every class must have training samples, and there must be at least two: the documented rule of
    every file-backed loader (`npz:`, `hf:`, `imagefolder:`), so that the same data has the same
    classes through each. A class without training samples would still get an output and receive
    flipped labels in the `mislabeled` task, with no clean sample of its own to learn from."""
    absent = np.setdiff1d(np.arange(len(classes)), y)
    if len(absent):
        ids = absent[:10].tolist()
        shown = [classes[i] for i in ids]
        named = "" if shown == [str(i) for i in ids] else f" (classes {shown})"
        raise HarnessError(
            f"{name}: every class must occur in the training labels, but class id(s) {ids}{named} never occur; {fix}"
        )
    if len(classes) < 2:
        raise HarnessError(f"{name}: the training labels hold a single class ({classes[0]!r}); a classifier needs "
                           "at least 2")
