"""`imagefolder:PATH`: a folder of class subfolders (optionally `train/` and `test/`).

Listing puts the images in a canonical order (integer stems are original indices) and follows
symbolic links only where no image can count twice (`harness.datasets.imagefolder_files` says which
files are images and which links are followed); decoding goes through the per-machine decode cache
(`harness.datasets.imagefolder_cache`). The fingerprint (`_identity_key`) has a frozen
definition: it is part of every stored run's address. It is made from the images' names, labels and
bytes, never from where the folder lies or when its files were written, so a copy of the folder on
another machine (a Ray node, a new disk) is the same dataset and finds the same stored runs.

As with `npz:` and `hf:`, every class (training subfolder) must hold images and there must be two.
Pixels follow `harness.datasets.pixels`, the rule `hf:` shares: 8-bit modes only, and a split is gray
(1 channel) when every image of the whole split is gray, whatever `--subset` decodes of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from harness.datasets.base import (
    Dataset,
    LoadRequest,
    _check_subset,
    _require_every_class,
    _round_robin,
    _test_count,
    not_utf8,
    register_dataset,
)
from harness.datasets.imagefolder_cache import _cached_decode, _Split, content_digest
from harness.datasets.imagefolder_exclude import Exclusions, read_exclusions, split_exclude
from harness.datasets.imagefolder_files import _IMG_EXTENSIONS, _MACOS_ZIP, _image_files
from harness.datasets.imagefolder_files import _SKIPPED_IMAGES as _SKIPPED_IMAGES
from harness.datasets.pixels import widen
from harness.errors import HarnessError
from harness.values import expand_home

#: Folder names of splits: one among the class folders (no `train/` beside it) would become a class.
_SPLIT_NAMES = ("train", "training", "test", "testing", "val", "valid", "validation")


@register_dataset("imagefolder", "a folder of class subfolders (optionally train/ and test/); option ,exclude=FILE",
                  takes_path=True)
def _load_imagefolder_request(request: LoadRequest) -> Dataset:
    assert request.path is not None  # load_dataset checked it
    folder, exclude_file = split_exclude(request.name, request.path)
    path = expand_home(folder, f"--dataset {request.name}")
    exclusions = read_exclusions(request.name, exclude_file, path) if exclude_file is not None else None
    return _load_imagefolder(request.name, path, request.subset, request.cache, exclusions)


def _load_imagefolder(name: str, path: Path, subset: int | None, cache_dir: Path,
                      exclusions: Exclusions | None = None) -> Dataset:
    path = path.resolve()
    if path.is_file():  # "does not exist" sent the user looking for a file that was there
        fix = f"pass npz:{path} for an array file" if path.suffix.lower() == ".npz" else \
            "pass the folder that holds the class subfolders"
        raise HarnessError(f"{name}: {path} is a file, not a folder; {fix}")
    if not path.is_dir():
        spaced = " (the option follows the path once, as ,exclude=FILE: lowercase, no space after the comma)" if \
            re.search(r",\s*exclude=", str(path), re.IGNORECASE) else ""
        raise HarnessError(f"{name}: folder {path} does not exist{spaced}; pass imagefolder:PATH with an existing "
                           "folder")
    cache = Path(cache_dir).resolve()
    if cache == path or path in cache.parents:  # its decoded copies would be read back as a class folder
        raise HarnessError(f"{name}: memprox's cache {cache} (MEMPROX_CACHE) is inside the image folder {path}, where "
                           "its decoded copies would become a class of the data; set MEMPROX_CACHE to a folder "
                           "apart from the data")
    train_dir, test_dir = path, None
    if (path / "train").is_dir():
        train_dir = path / "train"
        test_dir = path / "test" if (path / "test").is_dir() else None
    classes = _class_names(train_dir)
    if not classes:
        raise HarnessError(
            f"{name}: {train_dir} has no class subfolders; expected {train_dir}/<class>/<image>"
        )
    _check_split_folders(name, path, train_dir, test_dir, classes)
    class_to_idx = {c: i for i, c in enumerate(classes)}

    seen: dict[str, Path] = {}  # resolved image -> where it was listed: no image counts twice
    train = _list_split(train_dir, class_to_idx, path, seen, warn_order=True, exclusions=exclusions)
    test = _list_split(test_dir, class_to_idx, path, seen, exclusions=exclusions) if test_dir is not None else None
    if exclusions is not None:  # before anything is decoded (100 s for 50,000 JPEGs), a line that matched nothing
        exclusions.check_used(name, path)
    if not train.files:
        raise HarnessError(
            f"{name}: no images ({', '.join(_IMG_EXTENSIONS)}) under {train_dir}"
            + (f" but those {exclusions.source} excludes" if exclusions and exclusions.used else "")
            + f"; expected {train_dir}/<class>/<image>"
        )
    if len(classes) == 1:  # base's rule, with the fix an image folder needs (it named none)
        raise HarnessError(f"{name}: the training labels hold a single class ({classes[0]!r}); a classifier needs at "
                           f"least 2: put each other class's images in a folder of its own beside "
                           f"{train_dir / classes[0]} ({train_dir}/<class>/<image>)")
    _require_every_class(name, classes, train.labels, f"put images in those class folders of {train_dir}, or remove "
                         f"the folders" + (f" (or the lines of {exclusions.source} that exclude every image of "
                                           "one)" if exclusions else ""))
    n = _check_subset(name, subset, len(train.files))
    train_content = content_digest(train, "train", cache_dir)
    x_train = _cached_decode(train, "train", train_content, n, cache_dir)
    identity = [_identity_key("train", len(train.files), train_content)]

    if test is not None:
        test_content = content_digest(test, "test", cache_dir)
        identity.append(_identity_key("test", len(test.files), test_content))
        m = _test_count(subset, len(test.files))
        if m < len(test.files):
            x_test, y_test, test_files = _decode_test_subset(test, test_content, m, cache_dir)
        else:
            x_test = _cached_decode(test, "test", test_content, m, cache_dir) if m else _empty_like(x_train)
            y_test, test_files = test.labels, test.files
    else:
        x_test, y_test, test_files = _empty_like(x_train), np.zeros(0, dtype=np.int64), ()

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
        sample_names=tuple(Path(os.path.relpath(f, path)).as_posix() for f in train.files[:n]),
        test_sample_names=tuple(Path(os.path.relpath(f, path)).as_posix() for f in test_files),
    )


def _check_split_folders(name: str, path: Path, train_dir: Path, test_dir: Path | None, classes: list[str]) -> None:
    """Refuse split folders taken for classes, and say when a test split is not read.

    Without a `train/` folder every subfolder is a class, so `training/` and `testing/` (or `Train/`
    and `Test/` on a case-sensitive disk) became two classes whose labels said which split an image
    came from; a `val/` beside `train/` is not read, so the dataset silently had no test split. A folder
    named like a split is a class when it holds its images itself (no subfolder) beside other classes:
    a real `val` or `test` category was refused unless the classes were moved under `train/`."""
    splits = [c for c in classes if c.lower() in _SPLIT_NAMES]
    if train_dir == path and splits and (len(splits) == len(classes) or any(_class_names(path / c) for c in splits)):
        raise HarnessError(
            f"{name}: {path} has split folders {splits} among its class folders, so the split would be the "
            f"label; name them train/ and test/ ({path}/train/<class>/<image>), or point imagefolder: at "
            f"one split's folder"
        )
    if test_dir is not None or train_dir == path:
        return
    others = [c for c in _class_names(path) if c.lower() in _SPLIT_NAMES and c not in ("train", "test")]
    if others:
        warnings.warn(f"{name}: no {path}/test folder, so the dataset has no test split; {others} is not read: "
                      f"rename it to test/ to use it as the test split", stacklevel=5)


def _class_names(root: Path) -> list[str]:
    """Sorted subfolder names, as torchvision's ImageFolder, so label ids agree with it; not hidden ones,
    nor macOS's `__MACOSX` (`_image_files` says why)."""
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
                      and e.name != _MACOS_ZIP)
    except OSError as exc:
        raise HarnessError(f"cannot list folder {root}: {exc}; check that it exists and is readable") from exc


def _list_split(root: Path, class_to_idx: dict[str, int], tree: Path, seen: dict[str, Path],
                warn_order: bool = False, exclusions: Exclusions | None = None) -> _Split:
    """List a split's images and put them in canonical order.

    Integer stems are the samples' original indices (`00042.jpg` is sample 42), so that order is
    used when every stem is an integer and no two collide; otherwise ImageFolder's (class, path)
    order, which is deterministic but carries no meaning beyond that (`_by_index`). The stat digest
    holds each file's label and ctime too: the cached content digest is keyed by it (see
    `imagefolder_cache`), and a test split's labels change with the training classes.

    Symbolic links: every sample must be counted once, so a folder link that leads back into
    `tree` (the dataset folder), to an ancestor, or to a folder already listed is not followed
    (a `loop -> .` once turned 20 images into 420 samples), and a file reached twice (through a
    link, in this split or in `seen`, resolved image -> listed path, shared by both splits) is
    refused: a duplicate sample, or a test image that is also a training image. Links to files
    and folders elsewhere are followed: datasets assembled from links are common.
    """
    tree = tree.resolve()
    entries: list[tuple[str, str, Path, int]] = []  # (class, relative path, path, label)
    stats = hashlib.sha256()
    unknown = sorted(set(_class_names(root)) - set(class_to_idx))
    if unknown:
        raise HarnessError(
            f"{root} has class folders {unknown} that the training split lacks; "
            f"the test split may only use the training classes {sorted(class_to_idx)}"
        )
    skipped: list[str] = []
    hidden: list[str] = []
    for cls in sorted(class_to_idx):
        cls_dir = root / cls
        if not cls_dir.is_dir():
            continue
        for file, real in _image_files(cls_dir, tree, skipped, hidden):
            if exclusions is not None and exclusions.excludes(file.relative_to(tree).as_posix()):
                continue  # not a sample: neither listed, hashed nor checked (`imagefolder_exclude`)
            if real in seen:
                raise HarnessError(
                    f"image {real} is reached twice, as {seen[real]} and as {file} (through a symbolic "
                    f"link); every sample must occur once: remove one of the links, or copy the file if "
                    f"the duplicate is intended"
                )
            seen[real] = file
            _check_utf8(file, tree)
            try:
                st = file.stat()
                stats.update(f"{file}\t{class_to_idx[cls]}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\n"
                             .encode(errors="surrogateescape"))  # the folder's own path may be any bytes
            except OSError as exc:
                raise HarnessError(f"cannot read image {file}: {exc}; remove the file or fix it") from exc
            entries.append((cls, file.relative_to(cls_dir).as_posix(), file, class_to_idx[cls]))
    _warn_loose(root)
    if warn_order and root != tree:  # the training split, under train/: an image beside train/ is in no split
        _warn_loose(tree)
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} image(s) whose type imagefolder does not read (e.g. "
                      f"{skipped[:3]}); convert them to one of {', '.join(_IMG_EXTENSIONS)} to use them",
                      stacklevel=5)
    if hidden:
        warnings.warn(f"{root}: skipped {len(hidden)} hidden image file(s) (a name starting with '.', e.g. "
                      f"{hidden[:3]}): they are not samples; rename one without the leading '.' to use it",
                      stacklevel=5)
    entries = _by_index(sorted(entries, key=lambda e: (e[0], e[1])), root, warn_order)
    return _Split(
        root=root,
        files=tuple(e[2] for e in entries),
        labels=np.array([e[3] for e in entries], dtype=np.int64),
        stat_digest=stats.hexdigest(),
    )


def _warn_loose(folder: Path) -> None:
    """Say so when images lie in `folder` itself, outside every class folder: they have no label and
    are not used, which without a word looked like a dataset smaller than the user's for no reason."""
    try:
        loose = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _IMG_EXTENSIONS
                       and not p.name.startswith(".") and p.is_file())
    except OSError:
        return
    if loose:
        warnings.warn(f"{folder}: {len(loose)} image(s) lie in it outside every class folder (e.g. {loose[:3]}) and "
                      "are not used: an image's label is its folder's name; move each into its class folder",
                      stacklevel=6)


def _check_utf8(file: Path, tree: Path) -> None:
    """An image's name within the folder must be text: it is hashed into the fingerprint and written
    into every score file (a name copied from a Latin-1 archive crashed the load with a traceback)."""
    rel = file.relative_to(tree).as_posix()
    try:
        rel.encode()
    except UnicodeEncodeError:
        raise not_utf8(f"image {str(file)!r}: the name (its folder's, or its own)", rel,
                       f"rename it, e.g. with `convmv -f latin1 -t utf8 -r --notest {tree}`") from None


def _by_index(entries: list[tuple[str, str, Path, int]], root: Path, warn: bool) -> list[tuple[str, str, Path, int]]:
    """Entries sorted by integer stem when every stem is one and none collide, else as given.

    With `warn` (the training split), a folder whose stems are partly integers says why they are not
    the order: one stray `00001 copy.jpg` or `.../dog/00007.jpg` beside `.../cat/00007.jpg` silently
    reordered all 50,000 samples, and a label file in the original order (`--noisy-labels`) then
    lined up with the wrong images. A folder that breaks the rule in more than a few files (at most
    2, or a tenth) is not numbered by sample index at all (`cat/1.jpg` beside `dog/1.jpg`, numbered per
    class; names of any kind) and gets no warning: its (class, path) order is what its names mean."""
    ints = [int(e[2].stem) if re.fullmatch(r"\d+", e[2].stem) else None for e in entries]
    numbered = [i for i in ints if i is not None]
    if entries and len(numbered) == len(ints) and len(set(ints)) == len(ints):
        return [e for _, e in sorted(zip(numbered, entries), key=lambda p: p[0])]
    offenders = len(ints) - len(set(numbered))  # names without an index, and repeats of an index
    if warn and numbered and offenders <= max(2, len(ints) // 10):
        names = [f"{e[0]}/{e[1]}" for e in entries]
        others = [n for n, i in zip(names, ints) if i is None]
        if others:
            why = f"{len(others)} do not (e.g. {others[:3]})"
        else:
            first: dict[int | None, str] = {}
            clash = next(f"{first[i]} and {n}" for n, i in zip(names, ints) if first.setdefault(i, n) != n)
            why = f"two have one index ({clash})"
        warnings.warn(f"{root}: {len(ints) - len(others)} of {len(ints)} training images have integer file stems "
                      f"(sample indices), but {why}; so the samples are in (class, path) order, not by index, and a "
                      f"label file in the original order would not line up: rename those files if you pass such a "
                      f"label file; otherwise nothing needs doing",
                      stacklevel=6)
    return entries


def _decode_test_subset(test: _Split, content: str, m: int,
                        cache_dir: Path) -> tuple[np.ndarray, np.ndarray, tuple[Path, ...]]:
    """The `m` test images kept under `--subset` (`harness.datasets.base._test_keep`: round robin over
    the classes, in canonical order), decoded through the cache as the prefix of the split listed in
    round-robin order: its own cache file, the fingerprint untouched, and the gray rule still decided
    by the whole split (the rest of that listing)."""
    order = _round_robin(test.labels)
    listing = _Split(test.root, tuple(test.files[i] for i in order), test.labels[order], test.stat_digest)
    key = hashlib.sha256(f"round robin\n{content}".encode()).hexdigest()
    kept = order[:m]
    back = np.argsort(kept)  # round-robin order -> canonical order
    pixels = np.ascontiguousarray(_cached_decode(listing, "test", key, m, cache_dir)[back])
    return pixels, test.labels[kept[back]], tuple(test.files[i] for i in kept[back])


def _identity_key(split_name: str, count: int, content: str) -> str:
    """A split's part of the dataset fingerprint, from its content digest. Frozen (version 2; version
    1 hashed the folder's path and newest mtime, so every copy of a folder was a new dataset)."""
    key = {"version": 2, "split": split_name, "count": count, "content": content}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _match_channels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """If one split decoded as gray and the other as RGB, widen the gray one to RGB."""
    if not len(x_test):
        return x_train, _empty_like(x_train)
    if x_train.shape[1] != x_test.shape[1]:
        return widen(x_train), widen(x_test)
    return x_train, x_test


def _empty_like(x: np.ndarray) -> np.ndarray:
    return np.zeros((0, *x.shape[1:]), dtype=np.uint8)
