"""Reference memorization scores, and loaders for published score files.

A reference is only useful if it is aligned sample-for-sample with the dataset the proxies were
scored on. Published files (Feldman & Zhang's ``tr_mem``, the C-scores) are stored in the original
training order together with that order's labels, so every loader checks the labels against the
dataset's clean training labels and refuses a file that disagrees: a silently misaligned
reference would turn every similarity number into noise.

Subsets: when the dataset was cut with ``--subset`` it holds the first ``n`` training samples in
canonical order, so a full-size file is accepted and its first ``n`` entries are used (and checked).
Any other length mismatch is an error: given the dataset's size before ``--subset`` (``full_size``),
a file of another length is refused even when its first entries' labels happen to agree.
Scores must be finite real numbers where they are used and labels integer class indices: a NaN
would otherwise drop its sample from every metric unnoticed.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import HarnessError


@dataclass(frozen=True)
class Reference:
    """One memorization-like score per training sample (higher = more memorized)."""

    name: str  # "stability", "fz", "cscore"
    scores: np.ndarray  # (N,) float
    stderr: np.ndarray | None  # (N,) per-sample standard error when known


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read the named arrays, turning every way a file can be unusable into a HarnessError."""
    if path.is_dir():
        raise HarnessError(f"reference file {path} is a folder; pass the .npz file itself")
    if not path.is_file():
        raise HarnessError(f"reference file not found: {path}; pass the path of an existing .npz "
                           "(--reference fz:PATH or cscore:PATH, a path relative to the current folder)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: one bare array, no labels to check
            raise HarnessError(f"{path}: a single .npy array, not an .npz archive; a reference file must be an "
                               f".npz holding the keys {list(keys)} (scores and the labels they belong to)")
        with loaded as npz:
            present = list(npz.files)
            missing = [k for k in keys if k not in present]
            if missing:
                raise HarnessError(f"{path}: missing key(s) {missing}; keys present: {present}")
            return {k: np.asarray(npz[k]) for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{path}: not a readable .npz file ({exc})") from exc


def _align(
    path: Path, scores: np.ndarray, file_labels: np.ndarray, labels: np.ndarray, full_size: int | None = None
) -> np.ndarray:
    """Return the file's scores for the dataset's samples after checking length and labels.

    A file longer than the dataset is accepted only as a prefix (the ``--subset`` case), and, when
    the training set's size before the cut is known, only if it has exactly that many entries.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise HarnessError(f"dataset labels must be 1-D, got shape {labels.shape}")
    if scores.ndim != 1 or file_labels.ndim != 1 or len(scores) != len(file_labels):
        raise HarnessError(
            f"{path}: scores and labels must be 1-D arrays of equal length, got shapes "
            f"{scores.shape} and {file_labels.shape}"
        )
    _check_dtypes(path, scores, file_labels)
    n, n_file = len(labels), len(scores)
    if full_size is not None and n_file != full_size:
        raise HarnessError(
            f"{path}: length mismatch: the file has {n_file} samples but the dataset's training set has "
            f"{full_size}; a score file must hold one score per training sample of this dataset"
        )
    if n > n_file:
        raise HarnessError(
            f"{path}: length mismatch: the file has {n_file} samples but the dataset has {n}"
        )
    scores, file_labels = scores[:n], file_labels[:n]
    _check_finite(path, scores)
    differ = int(np.count_nonzero(file_labels != labels))
    if differ:
        prefix = f" (first {n} of {n_file} file entries, --subset)" if n < n_file else ""
        raise HarnessError(
            f"{path}: labels differ for {differ} of {n} samples{prefix}; the file must be in "
            "the dataset's original training order (and belong to the same dataset)"
        )
    return scores.astype(np.float64)


def _check_dtypes(path: Path, scores: np.ndarray, file_labels: np.ndarray) -> None:
    """Scores must be real numbers and labels class indices: a string would otherwise escape as a
    bare ValueError, a complex score lose its imaginary part, a date pass as a number."""
    if scores.dtype.kind not in "biuf":
        raise HarnessError(f"{path}: scores must be real numbers, got dtype {scores.dtype}; store them as float64")
    kind = file_labels.dtype.kind
    whole = kind == "f" and bool(np.all(np.isfinite(file_labels) & (file_labels == np.round(file_labels))))
    if kind not in "biu" and not whole:
        values = " with non-integer values" if kind == "f" else ""
        raise HarnessError(f"{path}: labels must be integer class indices, got dtype {file_labels.dtype}{values}; "
                           "store them as int64")


def _check_finite(path: Path, scores: np.ndarray) -> None:
    """A NaN would silently drop its sample from every metric (as an undefined stability estimate
    is), an inf would turn the metrics into NaN: a score file must be finite where it is used."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise HarnessError(f"{path}: {len(bad)} of the {len(scores)} scores used are NaN or infinite (first at "
                           f"index {', '.join(map(str, bad[:5]))}); a reference needs a finite score for every sample")


def load_fz(path: str | Path, labels: np.ndarray, full_size: int | None = None) -> Reference:
    """Feldman & Zhang (2020) memorization estimates (``tr_mem``), checked via ``tr_labels``."""
    path = Path(path)
    arrays = _read_npz(path, ("tr_mem", "tr_labels"))
    scores = _align(path, arrays["tr_mem"], arrays["tr_labels"], labels, full_size)
    return Reference(name="fz", scores=scores, stderr=None)


def load_cscore(path: str | Path, labels: np.ndarray, full_size: int | None = None) -> Reference:
    """C-scores (Jiang et al. 2021) as ``1 - score``: a high C-score means typical, so it is
    complemented to follow the harness convention that higher means more memorized."""
    path = Path(path)
    arrays = _read_npz(path, ("scores", "labels"))
    scores = _align(path, arrays["scores"], arrays["labels"], labels, full_size)
    return Reference(name="cscore", scores=1.0 - scores, stderr=None)
