"""Checks of an `npz:` file's x that need its stored dtype, before `npz` casts it to float32 features.

A value float32 cannot hold (|x| > 3.4e38) became inf in the cast and was refused as "NaN or inf",
naming a sample whose stored value was finite, with numpy's overflow RuntimeWarning beside it. A
float64 feature whose spread is below float32's resolution at its size (a timestamp in milliseconds,
a measurement with a large offset) became constant or a few steps in the cast and trained silently
as such. A uint8 table (N, D) is read as flattened pixels, which the duplicate search compares by
correlation: rows of a few small integers then correlate by chance (on 500 rows of 5 answers 1..5,
119 pairs were listed where 39 rows were copies), and 1 or 3 columns were drawn as 1-pixel images in the
suspects figures; so that reading is said, with how to choose the other.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

#: A feature whose float32 cast moves a value by more than this share of the feature's spread loses it.
_LOST_SHARE = 0.01
#: Bytes of float64 columns compared at a time.
_BLOCK_BYTES = 64 * 2**20


def check_float32_range(name: str, key: str, x: np.ndarray) -> None:
    """Refuse finite values beyond float32's range, which the cast to float32 features makes inf."""
    if x.dtype.kind != "f" or x.dtype.itemsize <= 4 or not x.size:
        return
    limit = float(np.finfo(np.float32).max)
    if -limit <= float(x.min()) and float(x.max()) <= limit:  # no temporary array of x's size on the common path
        return
    beyond = np.flatnonzero((np.abs(x.reshape(len(x), -1)) > limit).any(axis=1))
    if len(beyond):
        raise HarnessError(
            f"{name}: {key} has values beyond float32's range (|value| > {limit:.3g}) in {len(beyond)} sample(s) "
            f"(first: {beyond[:5].tolist()}), and npz: trains on float32 features; rescale them before saving "
            f"(divide by a constant, or np.log1p of a positive feature)"
        )


def warn_lost_precision(name: str, path: Path, key: str, x: np.ndarray, cast: np.ndarray) -> None:
    """Warn about the features (columns of an (N, D) table saved wider than float32) whose spread the cast
    to float32 lost: the values varied by less than float32 resolves at their size."""
    if x.ndim != 2 or x.dtype.kind not in "fiu" or x.dtype.itemsize <= 4 or len(x) < 2:
        return
    cast = cast.reshape(x.shape)
    step = max(1, _BLOCK_BYTES // (8 * len(x)))  # columns at a time: a float64 copy of a large table is gigabytes
    spread, moved = np.empty(x.shape[1]), np.empty(x.shape[1])
    for start in range(0, x.shape[1], step):
        wide = np.asarray(x[:, start:start + step], dtype=np.float64)
        spread[start:start + step] = wide.std(axis=0)
        moved[start:start + step] = np.abs(wide - cast[:, start:start + step]).max(axis=0)
    lost = np.flatnonzero((spread > 0) & (moved > _LOST_SHARE * spread))
    if len(lost):
        j = int(lost[0])
        warnings.warn(
            f"{name}: {path}: {key}'s feature(s) {lost[:10].tolist()} vary by less than float32 resolves at their "
            f"size (feature {j}: values near {float(np.median(x[:, j])):.6g}, spread (std) {float(spread[j]):.3g}), "
            f"so as the float32 features npz: trains on they lose most of that variation; save those columns "
            f"centred (x - x.mean(axis=0), in float64) or rescaled", stacklevel=5)


def warn_uint8_table(name: str, path: Path, x: np.ndarray) -> None:
    """Say that a uint8 (N, D) x is read as flattened pixels, and how to choose a table or images instead."""
    if x.dtype != np.uint8 or x.ndim != 2:
        return
    n, d = x.shape
    effect = ("the suspects task's figures draw each row as a 1-pixel image" if d in (1, 3) else
              "" if d == 2 else  # 1 to 3 values are searched as a table: only the figures could mislead
              "the suspects task's duplicate search compares its rows as pixels (by correlation, where rows of a "
              "few small integers are near by chance), and image grids cannot show them")
    if not effect:
        return
    warnings.warn(
        f"{name}: {path} holds x of shape {x.shape} in uint8, which npz: reads as images saved flattened: "
        f"{effect}; if these are table columns (counts, codes), "
        f"save x.astype(np.float32) (the model sees the same standardized features); if they are images, save "
        f"x.reshape({n}, H, W) or ({n}, C, H, W) (image grids, mirrored and shifted copies searched)",
        stacklevel=4)
