"""Checks of an `npz:` file's x that need its stored dtype, before `npz` casts it to float32 features.

A value float32 cannot hold (|x| > 3.4e38) became inf in the cast and was refused as "NaN or inf", naming a
sample whose stored value was finite, with numpy's overflow RuntimeWarning beside it. A float64 (or int32,
int64) feature whose spread is below float32's resolution at its size (timestamps over minutes, a
measurement with a large offset) became constant or a few steps in the cast and trained silently as such.
(N, C) labels name `argmax`, except for 0/1 rows it would label silently. A uint8 table (N, D) is read as
flattened pixels, which the duplicate search compares by correlation: rows of a few small integers then
correlate by chance (on 500 rows of 5 answers 1..5, 119 pairs were listed where 39 rows were copies), and 1
or 3 columns were drawn as 1-pixel images in the suspects figures; so that reading is said, with how to
choose the other.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

#: A feature whose float32 rounding error has a spread (std) above this share of the feature's loses more than
#: 1 % of its variance. Float32 steps of 2 % of the spread (unix seconds over 6 hours) keep it to within 0.6 %,
#: and were warned about when one value moved by 1 % of the std.
_LOST_SHARE = 0.1
#: The smallest magnitude the cast to float32 rounds to inf: halfway from float32's max to 2**128.
_OVERFLOW = 2.0**128 - 2.0**103
#: Bytes of float64 columns compared at a time.
_BLOCK_BYTES = 64 * 2**20


def check_float32_range(name: str, key: str, x: np.ndarray) -> None:
    """Refuse finite values the cast to float32 features makes inf: |value| >= 2**128 - 2**103, halfway past
    float32's max. A value just above the max (3.4028235e38, as numpy prints the max) rounds to it, and loads."""
    if x.dtype.kind != "f" or x.dtype.itemsize <= 4 or not x.size:
        return
    if -_OVERFLOW < float(x.min()) and float(x.max()) < _OVERFLOW:  # no temporary array of x's size on the common path
        return
    beyond = np.flatnonzero((np.abs(x.reshape(len(x), -1)) >= _OVERFLOW).any(axis=1))
    if len(beyond):
        raise HarnessError(
            f"{name}: {key} has values beyond float32's range (|value| > {float(np.finfo(np.float32).max):.3g}) in "
            f"{len(beyond)} sample(s) (first: {beyond[:5].tolist()}), and npz: trains on float32 features; rescale "
            f"them before saving (divide by a constant, or np.log1p of a positive feature)"
        )


def warn_lost_precision(name: str, path: Path, key: str, x: np.ndarray, cast: np.ndarray) -> None:
    """Warn about the features (columns of an (N, D) table in a type float32 does not hold exactly: float64,
    int32 and wider) whose variation the cast to float32 loses: its rounding error's spread is more than
    `_LOST_SHARE` of the feature's. A constant column has no variation to lose: its float64 std is a rounding
    residue (1e-16 for 0.1), which the check took for a spread, and the cast's shift, common to every sample,
    is removed by standardizing."""
    if x.ndim != 2 or len(x) < 2 or not (x.dtype.kind == "f" and x.dtype.itemsize > 4
                                         or x.dtype.kind in "iu" and x.dtype.itemsize > 2):
        return
    cast = cast.reshape(x.shape)
    step = max(1, _BLOCK_BYTES // (8 * len(x)))  # columns at a time: a float64 copy of a large table is gigabytes
    spread, share = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, x.shape[1], step):
        block, part = x[:, start:start + step], slice(start, start + step)
        varies = block.max(axis=0) > block.min(axis=0)  # exact, in the stored type
        wide = np.asarray(block, dtype=np.float64)  # a view of float64 columns, a copy of integer ones
        spread[part] = np.where(varies, wide.std(axis=0), 0.0)
        error = (wide - cast[:, part]).std(axis=0)
        share[part] = np.where(spread[part] > 0, error / np.where(spread[part] > 0, spread[part], 1.0), 0.0)
    lost = np.flatnonzero(share > _LOST_SHARE)
    if len(lost):
        j = int(lost[0])
        warnings.warn(
            f"{name}: {path}: {key}'s feature(s) {lost[:10].tolist()} vary too little for float32 to resolve at "
            f"their size: in the float32 features npz: trains on, feature {j}'s rounding error has "
            f"{float(share[j]):.0%} of its spread (values near {float(np.median(x[:, j])):.6g}, std "
            f"{float(spread[j]):.3g}; at 100 % the feature is lost); save those columns centred "
            f"(x - x.mean(axis=0), in float64) or rescaled", stacklevel=5)


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
        f"{_reshape(n, d)} (image grids, mirrored and shifted copies searched)",
        stacklevel=4)


def _reshape(n: int, d: int) -> str:
    """The reshape that makes flattened rows of `d` pixels images: a square for d = 784 (MNIST's 28 x 28), three
    square planes for d = 3,072 (CIFAR-10's own rows, red then green then blue); H and W where d says neither."""
    side, plane = math.isqrt(d), math.isqrt(d // 3)
    if d >= 64 and side * side == d:
        return f"x.reshape({n}, {side}, {side})"
    if d >= 192 and d % 3 == 0 and 3 * plane * plane == d:
        return (f"x.reshape({n}, 3, {plane}, {plane}) if each row holds the red, then the green, then the blue "
                f"plane, x.reshape({n}, {plane}, {plane}, 3).transpose(0, 3, 1, 2) if it holds RGB triples")
    return f"x.reshape({n}, H, W) or ({n}, C, H, W)"


def label_matrix_fix(key: str, y: np.ndarray) -> str:
    """How to save (N, C) labels as one class id per sample: `argmax` for one-hot rows or scores, except for
    0/1 rows without a 1 or with several, which argmax labelled silently (class 0, the first 1)."""
    if y.shape[1] == 1:
        return f"save {key}.ravel()"
    if y.dtype.kind not in "biuf":
        return "save one class id per sample"
    ones = (y != 0).sum(axis=1) if y.dtype.kind == "b" or np.isin(y, (0, 1)).all() else np.ones(len(y))
    none, several = np.flatnonzero(ones == 0), np.flatnonzero(ones > 1)
    if not (len(none) or len(several)):
        return f"save {key}.argmax(axis=1) (one-hot rows or scores per class)"
    rows = [f"{len(found)} row(s) with {what} (first: {found[:5].tolist()})"
            for found, what in ((none, "no 1"), (several, "several 1s")) if len(found)]
    return (f"{' and '.join(rows)}, which argmax would label silently (class 0, the first 1): give those rows "
            f"their class (or drop them), then save {key}.argmax(axis=1)")


def number_label_fix(key: str, y: np.ndarray, test: bool = False, named: bool = False) -> str:
    """How to save labels of a non-integer dtype as class ids: `astype` only for whole numbers that are ids
    already (bool, 0.0..C-1), since it truncates 0.25 and 0.75 to one class 0 silently, and whole numbers
    that are not the ids (1.0 and 2.0) were told `astype`, then refused for their empty class 0;
    `remap_fix` otherwise. `test`: the file has a test split, which must be numbered with the same classes.
    `named`: the file holds `classes`, so whole numbers >= 0 index its names: `astype` keeps them, and a class
    left empty is then told the remap that keeps the names (the remap told here saved `classes=np.unique(y)
    .astype(str)`, and classes a, b, c labelled 0.0 and 2.0 became classes "0.0" and "2.0")."""
    if y.dtype.kind == "b":
        return f"save {key}.astype(np.int64)"
    mapped = remap_fix(key, test)
    if y.dtype.kind != "f":
        return mapped
    missing = np.flatnonzero(~np.isfinite(y))
    if len(missing):
        return f"it holds NaN or inf in {len(missing)} sample(s) (first: {missing[:5].tolist()}); drop or label them"
    fractions = np.flatnonzero(y % 1 != 0)
    if not len(fractions):
        values = np.unique(y)
        ids = values.min() >= 0 if key != "y" or named else values[0] == 0 and values[-1] == len(values) - 1
        if ids:
            return f"save {key}.astype(np.int64)"
        return (f"its values {_preview(values)} are whole numbers but not the class ids 0..C-1: "
                f"{negative_named_fix(key) if named else mapped}")
    first = int(fractions[0])
    return (f"{len(fractions)} labels are not whole numbers (first: sample {first}, {float(y[first])!r}), which "
            f"{key}.astype(np.int64) would truncate into one class with their neighbours: {mapped}")


def remap_fix(key: str, test: bool) -> str:
    """How to number labels 0..C-1. With a test split, y and y_test by the same classes: `np.unique` of each
    alone numbers y_test's classes apart from y's where y_test lacks one (its 2.0 becomes id 1, the id of y's
    1.0), and the test accuracy is then computed on wrong labels, silently."""
    if not test:
        return f"save np.unique({key}, return_inverse=True)[1], and classes=np.unique({key}).astype(str)"
    return ("number y and y_test by the same classes: classes = np.unique(y), check np.isin(y_test, classes).all() "
            "(a test class must occur in training), then save y=np.searchsorted(classes, y), y_test=np.searchsorted("
            "classes, y_test) and classes=classes.astype(str) (np.unique(y_test, return_inverse=True) alone numbers "
            "y_test's classes apart from y's where it lacks one)")


def negative_named_fix(key: str) -> str:
    """How to save negative ids beside `classes`, whose names the ids index: a negative id (-1, "unlabelled")
    names no class. `remap_fix` made the ids themselves the names ("-1", "0", ...: the file's names lost and
    every class shifted by one, class a labelled "0") (review31b)."""
    x = "x_test" if key == "y_test" else "x"
    return (f"{key}'s ids index classes, and a negative id names none: give those samples their class, or drop "
            f"them: keep = {key} >= 0, then save {x}={x}[keep] and {key}={key}[keep] (and the same rows of "
            f"{'files_test' if key == 'y_test' else 'files'}, if saved)")


def named_remap_fix(test: bool) -> str:
    """How to number y 0..C-1 when the file holds `classes` (ids index its names) and a class is never used:
    keep the names of the classes used. `remap_fix`'s `classes=classes.astype(str)` replaced names a and c by
    "0" and "2" (the ids), and the file's names were lost from every CSV's label_name."""
    if not test:
        return "used = np.unique(y), then save y=np.searchsorted(used, y) and classes=classes[used]"
    return ("number y and y_test by the classes y uses, keeping their names: used = np.unique(y), check "
            "np.isin(y_test, used).all() (a test class must occur in training), then save y=np.searchsorted(used, "
            "y), y_test=np.searchsorted(used, y_test) and classes=classes[used]")


def text_label_fix(key: str, test: bool, named: bool = False) -> str:
    """How to save text labels as ids with their names; with a test split, both by the training's classes.
    A text y_test beside ids in y and `classes` (`named`; y is checked first, so it holds ids) is numbered
    by those names: told to renumber y from text labels, which it lacks, a reader had no fix to follow."""
    fix = f"save classes, {key} = np.unique(labels, return_inverse=True) and pass classes=classes"
    if key == "y_test" and named:
        return ("number y_test by the classes y's ids index: "
                "index = {c: i for i, c in enumerate(classes.astype(str))}, check np.isin(y_test.astype(str), "
                "list(index)).all() (a test class must occur in training), then save "
                "y_test=np.array([index[c] for c in y_test.astype(str)])")
    if not test:
        return fix
    return ("save classes, y = np.unique(labels, return_inverse=True), check np.isin(test_labels, classes).all() "
            "(a test class must occur in training), then y_test = np.searchsorted(classes, test_labels), and pass "
            "classes=classes (np.unique of the test labels alone numbers their classes apart from y's where they "
            "lack one)")


def _preview(values: np.ndarray) -> str:
    """A few of `values`, as a reader would type them."""
    shown = ", ".join(f"{float(v):g}" for v in values[:5])
    return f"{shown}{', ...' if len(values) > 5 else ''}"


def warn_repeated_names(name: str, key: str, names: tuple[str, ...]) -> None:
    """Warn when `files` names two samples alike: the suspects CSVs' `file` (and `duplicate_files`, a
    fix list joined on it) then cannot tell them apart, and `index` (the row of x) must be used instead."""
    # files_test names the test samples, in train_test_duplicates.csv (`file_test`, beside `test`, the row of x_test)
    where = ("train_test_duplicates.csv's file_test column", "test (the row of x_test)") if key == "files_test" \
        else ("the suspects CSVs' file column", "index (the row of x)")
    seen: dict[str, int] = {}
    for i, sample in enumerate(names):
        if sample in seen:
            repeated = len(names) - len(set(names))
            warnings.warn(f"{name}: {key} names {repeated} sample(s) with a name already used (first: {sample!r}, rows "
                          f"{seen[sample]} and {i}): {where[0]} cannot tell them apart, use {where[1]} for those, or "
                          f"save {key} with one distinct name per sample", stacklevel=5)
            return
        seen[sample] = i


def structured_fix(key: str, x: np.ndarray) -> str | None:
    """What to save for an x that is no (N, ...) array of numbers by shape: a structured array (fields,
    read as a 1-D array of records) or a 1-D array (one feature); None otherwise. The submodule is imported
    by name: `numpy.lib.recfunctions` is not an attribute of `numpy.lib` until imported (AttributeError)."""
    if x.dtype.names:
        return (f"{key} is a structured array (fields {list(x.dtype.names)[:5]}); save its fields as columns: "
                f"from numpy.lib import recfunctions, then save "
                f"{key}=recfunctions.structured_to_unstructured({key}).astype(np.float32)")
    if x.ndim == 1:
        return f"a single feature is a column: save {key}.reshape(-1, 1)"
    return None
