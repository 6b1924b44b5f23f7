"""Ground truth for the detection tasks (methods.md §3): injected label noise and duplicates.

Pure numpy, seeded with `np.random.default_rng(seed)`, inputs never modified: the same seed must
give the same positives on every machine, so that a proxy's AUROC is comparable across runs and
the clean labels stay available for the other tasks. Callers convert torch tensors themselves.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.values import expand_home

__all__ = ["default_duplicate_pairs", "inject_duplicates", "read_label_file", "symmetric_noise"]


def symmetric_noise(
    labels: np.ndarray, num_classes: int, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Give exactly round(rate * N) samples a label drawn uniformly from the *other* classes.

    Exact counts (not a Bernoulli draw per sample) make "precision at k = number of positives"
    well defined and equal across seeds. Returns (noisy labels, mask of changed samples).
    """
    y = _check_labels(labels, num_classes, "labels")
    if not 0.0 <= rate < 1.0:
        raise HarnessError(f"noise rate must be in [0, 1), got {rate}; e.g. --noise-rates 0.05 for 5%")
    rng = np.random.default_rng(seed)
    n = len(y)
    k = round(rate * n)
    chosen = rng.choice(n, size=k, replace=False)
    noisy = y.copy()
    noisy[chosen] = _other_label(y[chosen], num_classes, rng)
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return noisy, mask


def default_duplicate_pairs(n: int) -> int:
    """0.5% of the training set, the paper's 250 pairs of 50,000 scaled to N."""
    return max(1, round(0.005 * n))


def inject_duplicates(
    images: np.ndarray, labels: np.ndarray, num_classes: int, pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy image b into slot a for P disjoint pairs, relabelling a to a class other than b's.

    Both members of a pair are positives: a detector cannot know which one is the "copy", and the
    conflicting labels on identical inputs are what a memorization proxy should flag.
    Returns (images, labels, positives mask), all new arrays.
    """
    y = _check_labels(labels, num_classes, "labels")
    x = np.asarray(images)
    n = len(y)
    if len(x) != n:
        raise HarnessError(
            f"inject_duplicates: {len(x)} images but {n} labels; pass aligned arrays"
        )
    if pairs < 1 or 2 * pairs > n:
        raise HarnessError(
            f"cannot inject {pairs} duplicate pairs into {n} samples: need 1 <= pairs <= {n // 2}; "
            f"lower --duplicate-pairs or use a larger --subset"
        )
    rng = np.random.default_rng(seed)
    a, b = _pair_slots(n, pairs, rng)
    new_x = x.copy()
    new_y = y.copy()
    new_x[a] = x[b]
    new_y[a] = _other_label(y[b], num_classes, rng)
    positives = np.zeros(n, dtype=bool)
    positives[a] = True
    positives[b] = True
    return new_x, new_y, positives


def _pair_slots(n: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slots a (overwritten) and b (copied from): the generator's first draw, so both callers agree."""
    perm = rng.permutation(n)
    return perm[:pairs], perm[pairs : 2 * pairs]


def duplicate_clean_labels(labels: np.ndarray, pairs: int, seed: int) -> np.ndarray:
    """The true class of each slot after `inject_duplicates(..., pairs, seed)`: slot a holds b's image.

    The per-sample tables' `clean_label` said a's old class, so `label != clean_label` missed a copy
    whose new label happened to be a's old class (one of two copies in a digits run)."""
    y = np.asarray(labels).copy()
    a, b = _pair_slots(len(y), pairs, np.random.default_rng(seed))
    y[a] = y[b]
    return y


def read_label_file(spec: str, n: int, num_classes: int, expected_sha: str = "") -> np.ndarray:
    """Read a noisy-label vector (e.g. human label noise) from "f.npy", "f.npz" or "f.npz:key".

    Every check names the problem and the fix: a silently misaligned label file would produce
    plausible-looking but meaningless AUROCs. `expected_sha`: the content hash the run's address
    holds (`Corruption.label_file_sha`); the bytes read are checked against it and parsed, so a file
    replaced after planning is refused rather than trained under the old file's address.
    """
    path, key = _parse_label_spec(spec)
    try:
        exists = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise HarnessError(f"label file {spec!r} cannot be looked up ({exc.strerror}); pass an existing file") from exc
    if not exists:
        raise HarnessError(
            f"label file {path} does not exist; pass --noisy-labels PATH.npy or PATH.npz[:KEY]"
        )
    data = path.read_bytes()
    if expected_sha and content_sha(data) != expected_sha:
        raise HarnessError(f"label file {path} changed while the experiment ran (content hash {content_sha(data)}, "
                           f"planned with {expected_sha}); leave it unchanged until the experiment ends, and rerun")
    arr = _load_label_array(path, key, data)
    where = f"{path}" + (f":{key}" if key else "")
    if arr.ndim != 1:
        hint = "; a one-hot or probability array? save labels.argmax(1)" if arr.ndim == 2 and len(arr) == n else ""
        raise HarnessError(f"labels in {where} have shape {arr.shape}; expected a 1-D array of {n} class ids{hint}")
    arr = _as_int_labels(arr, where)
    if len(arr) != n:
        raise HarnessError(
            f"labels in {where} have length {len(arr)} but the whole training set has {n} samples; "
            f"the file must hold one label per training sample in canonical order, all {n} of them even "
            f"with --subset (its first N are used); pass the --dataset it was made for (the default is "
            f"the embedded digits)"
        )
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise HarnessError(
            f"labels in {where} must be in [0, {num_classes}); {bad.size} are not (first: index {i} "
            f"has {int(arr[i])}); the file may belong to a different dataset"
        )
    return arr


# --------------------------------------------------------------------------------------------


def _other_label(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform over the num_classes - 1 classes different from each given label."""
    offset = rng.integers(1, num_classes, size=len(labels))
    return (labels + offset) % num_classes


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """A 1-D int64 copy, after checking there is another class to move each label to."""
    if num_classes < 2:
        raise HarnessError(
            f"label corruption needs at least 2 classes, got num_classes={num_classes}"
        )
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise HarnessError(f"{what} must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise HarnessError(
            f"{what} must be in [0, {num_classes}), found values {y.min()}..{y.max()}"
        )
    return y.astype(np.int64, copy=True)


def split_label_spec(spec: str) -> tuple[str, str | None]:
    """("f.npz", "key") of "f.npz:key", (spec, None) otherwise; a colon elsewhere (e.g. a Windows drive)
    is part of the path."""
    head, sep, key = spec.rpartition(":")
    if not spec.endswith((".npy", ".npz")) and sep and head.endswith(".npz") and key:
        return head, key
    return spec, None


def _parse_label_spec(spec: str) -> tuple[Path, str | None]:
    path, key = split_label_spec(spec)
    if key is not None or spec.endswith((".npy", ".npz")):
        return expand_home(path, "--noisy-labels"), key
    raise HarnessError(
        f"label file {spec!r} is not .npy or .npz; pass PATH.npy, PATH.npz or PATH.npz:KEY"
    )


#: What numpy raises for a file that is not a readable .npy/.npz (empty, truncated, a zip of
#: other files, a damaged member): bad input, not a traceback.
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def content_sha(data: bytes) -> str:
    """A label file's content hash, as run addresses hold it."""
    return hashlib.sha256(data).hexdigest()[:16]


def _load_label_array(path: Path, key: str | None, data: bytes) -> np.ndarray:
    if not data:
        raise HarnessError(f"label file {path} is empty; save the labels with numpy.save/savez")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except _UNREADABLE as exc:
        # numpy takes a file without the .npy/zip signature for a pickle, and says how to load one:
        # the harness never unpickles a user's file, so say what the file is not instead
        why = "it is not a .npy or .npz file" if "pickle" in str(exc) else str(exc) or type(exc).__name__
        raise HarnessError(f"cannot read label file {path}: {why}; save the labels with numpy.save/savez") from exc
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise HarnessError(
                f"{path} is a .npy file holding one array; drop ':{key}' from the spec"
            )
        return loaded
    with loaded:
        keys = list(loaded.files)
        if key is None:
            if len(keys) != 1:
                raise HarnessError(
                    f"{path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                    f"choose one with {path}:KEY"
                )
            key = keys[0]
        if key not in keys:
            raise HarnessError(
                f"{path} has no array {key!r}; available keys: {', '.join(keys) or 'none'}"
            )
        try:
            array = loaded[key]
        except _UNREADABLE as exc:  # object arrays need pickle, which is refused; a damaged member
            raise HarnessError(
                f"cannot read {path}:{key}: {exc or type(exc).__name__}; store labels as an integer array"
            ) from exc
    if not isinstance(array, np.ndarray):  # numpy hands back a member that is no .npy as raw bytes
        raise HarnessError(f"cannot read {path}:{key}: it is not a numpy array; save it with numpy.savez")
    return array


def _as_int_labels(arr: np.ndarray, where: str) -> np.ndarray:
    """Accept integer-valued floats (a common by-product of pandas/CSV), nothing else."""
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if finite.all() and np.array_equal(arr, np.round(arr)):
            return arr.astype(np.int64)
    if arr.dtype.kind in "US":  # class names: astype(int) fails on them
        raise HarnessError(f"labels in {where} are class names ({arr.dtype}); save class ids instead, in the "
                           "dataset's class order (an image folder's: its class folders sorted by name), e.g. "
                           "np.array([classes.index(c) for c in labels])")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():  # pandas reads a blank cell as NaN
        raise HarnessError(f"labels in {where} hold {int(np.isnan(arr).sum())} NaN (missing labels, first at "
                           f"sample {int(np.flatnonzero(np.isnan(arr))[0])}); every sample needs a class id: fill "
                           "them, or drop those samples from the dataset too")
    if np.issubdtype(arr.dtype, np.floating):  # astype(int) would truncate 0.5 to class 0 without a word
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        raise HarnessError(f"labels in {where} must be integer class ids, got dtype {arr.dtype} with {bad.size} "
                           f"non-integer values (first: sample {int(bad[0])}, {float(arr[bad[0]])}); fix those labels "
                           "(astype(int) would truncate them), then save the file again")
    raise HarnessError(f"labels in {where} must be integer class ids, got dtype {arr.dtype}; convert with "
                       "labels.astype(int)")
