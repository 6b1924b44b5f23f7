"""`npz:PATH`: any array data set saved with `numpy.savez` (x, y; optional x_test, y_test, classes,
and files/files_test: what names each sample, so that a suspect can be found where it came from).

The file is read without unpickling, after checking every member's header; its SHA-256 is the
dataset's fingerprint. The label rules (`_npz_labels`, `_npz_classes`) are shared with `hf:`.
"""

from __future__ import annotations

import math
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness.datasets.base import Dataset, LoadRequest, _make, _require_every_class, _test_keep, register_dataset
from harness.datasets.npz_checks import (
    check_float32_range,
    label_matrix_fix,
    named_remap_fix,
    negative_named_fix,
    number_label_fix,
    remap_fix,
    structured_fix,
    text_label_fix,
    warn_lost_precision,
    warn_repeated_names,
    warn_uint8_table,
)
from harness.errors import HarnessError
from harness.io import file_sha256
from harness.values import EXCLUDE_OPTION, expand_home

# --------------------------------------------------------------------------------------------
# npz: any array data set

_NPZ_KEYS = ("x", "y", "x_test", "y_test", "classes", "files", "files_test")
#: Suffixes of text tables a user may pass as they are: the error names the conversion, not numpy.savez alone.
_TEXT_TABLES = (".csv", ".tsv", ".txt")


@register_dataset(
    "npz",
    "a .npz with x (N, ...) and y (N,) class ids 0..C-1; optional x_test/y_test and classes (names)",
    takes_path=True,
)
def _load_npz(request: LoadRequest) -> Dataset:
    """Arrays in their stored order are the canonical order (sample i is x[i]).

    x may be (N, D) features (become float32 (N, D, 1, 1)), (N, H, W) gray images or (N, C, H, W)
    images; uint8 stays uint8 (images), any other real dtype becomes float32 and must be finite.
    The classes are the `classes` names, else 0..max(y); every one of them must occur in y, and
    there must be two. An empty x_test/y_test (0 samples) is the same as none: the dataset has no
    test split, and a run's held-out accuracy is NaN.
    No decode cache: reading the arrays is as fast as reading a cache would be. The file's SHA-256
    is the dataset's fingerprint, so an edited file is a different dataset.
    """
    assert request.path is not None  # load_dataset checked it
    name = request.name
    path = expand_home(request.path, f"--dataset {name}").resolve()
    if path.is_dir():  # "does not exist" sent the user looking for a folder that was there
        raise HarnessError(f"{name}: {path} is a folder, not a .npz file; pass npz:PATH with a .npz file, or "
                           f"imagefolder:{path} for a folder of class subfolders")
    if not path.is_file():
        option = " (,exclude=FILE is imagefolder:'s option; leave the rows out of the arrays)" \
            if EXCLUDE_OPTION in str(request.path) else ""
        raise HarnessError(f"{name}: file {path} does not exist{option}; pass npz:PATH with an existing .npz file")
    arrays = _read_npz(name, path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        case = " (the names are lower case)" if any(k.upper() in arrays for k in missing) else ""
        raise HarnessError(
            f"{name}: {path} lacks array(s) {missing} (it has {sorted(arrays) or 'none'}){case}; "
            f"save it with numpy.savez(path, x=features, y=labels)"
        )
    unread = sorted(set(arrays) - set(_NPZ_KEYS))
    if unread:  # a typo (`xtest`, `ytest`) silently left the dataset without its test split
        warnings.warn(f"{name}: {path} holds arrays {unread} that are not read (it reads {', '.join(_NPZ_KEYS)}); "
                      f"rename one that is meant as one of those", stacklevel=3)
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise HarnessError(f"{name}: {path} has only one of x_test and y_test; save both or neither")
    x = _npz_features(name, "x", arrays["x"], path=path)
    _warn_float_images(name, path, arrays["x"])
    warn_uint8_table(name, path, arrays["x"])
    has_test, named = "x_test" in arrays, "classes" in arrays
    y = _npz_labels(name, "y", arrays["y"], len(x), test=has_test, named=named)
    x_test = _npz_features(name, "x_test", arrays["x_test"], allow_empty=True, path=path) if has_test else x[:0]
    y_test = _npz_labels(name, "y_test", arrays["y_test"], len(x_test), test=True, named=named) if has_test else y[:0]
    if not len(x_test):  # an empty test split is no test split: the training layout, no dtype change
        x_test = x[:0]
    if x_test.shape[1:] != x.shape[1:]:
        raise HarnessError(
            f"{name}: x_test samples are {x_test.shape[1:]} but x samples are {x.shape[1:]}; save them with one shape"
        )
    if x.dtype != x_test.dtype:  # uint8 images in one split, real values in the other
        x_test = _test_like_train(name, path, x, x_test)
    fix = _NPZ_REMAP  # with a test split, both numbered alike; with `classes`, keeping their names
    if has_test or named:
        remap = named_remap_fix(has_test) if named else remap_fix('y', True)
        fix = f"remap: {remap}; ids must be 0..C-1 with every class present"
    classes = _npz_classes(name, arrays.get("classes"), y, y_test, fix, saved=True)
    dataset = _make(name, x, y, x_test, y_test, classes, request.subset, fingerprint=file_sha256(path)[:16])
    return _with_names(dataset, arrays, len(x), len(x_test), _test_keep(y_test, request.subset))


def _with_names(dataset: Dataset, arrays: dict[str, np.ndarray], n: int, m: int, test_kept: np.ndarray) -> Dataset:
    """`dataset` with each sample named by `files` (and `files_test`), when the file holds them: the
    suspects CSV and duplicates.csv then give the `file` of each suspect and copy (the image's path, a
    table row's id), not only its row number, which a user had to map back to the source by hand."""
    name = dataset.name
    if "files_test" in arrays and "files" not in arrays:
        raise HarnessError(f"{name}: files_test without files; save files (one name per row of x) too, or neither")
    if "files" not in arrays:
        return dataset
    train = _npz_names(name, "files", arrays["files"], n)
    test = _npz_names(name, "files_test", arrays["files_test"], m) if "files_test" in arrays else None
    return replace(dataset, sample_names=train[:len(dataset.x_train)],
                   test_sample_names=None if test is None or not m else tuple(test[i] for i in test_kept))


def _npz_names(name: str, key: str, values: np.ndarray, n: int) -> tuple[str, ...]:
    """One name per sample, as text: a str (or UTF-8 bytes, or integer id) array of length `n`."""
    if values.ndim != 1 or len(values) != n or values.dtype.kind not in "USiu":
        raise HarnessError(f"{name}: {key} must be a 1-D array of {n} names (one per row of "
                           f"{'x' if key == 'files' else 'x_test'}), got {values.dtype} {values.shape}; save "
                           f"{key}=np.array(names, dtype=str)")
    names = tuple(_class_name(name, v, key) for v in values.tolist())
    warn_repeated_names(name, key, names)
    return names


def _warn_float_images(name: str, path: Path, x: np.ndarray) -> None:
    """Say when x looks like images stored as floats ((N, 1 or 3, H, W)): npz: takes only
    uint8 as images, so such pictures trained as features, silently without the suspects task's image
    grids and duplicate pairs drawn, and with duplicates searched by feature distance, not pixel correlation."""
    if x.dtype == np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):  # (N, T, F) may be sequences: no word
        return
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    save = ("save (x * 255).round().astype(np.uint8)" if 0 <= low and high <= 1 else
            "save x.round().astype(np.uint8)" if 0 <= low and high <= 255 else "save them as uint8 pixels (0..255)")
    warnings.warn(f"{name}: {path} holds x of shape {x.shape} in {x.dtype}: image-shaped, but npz: reads only uint8 "
                  f"as images, so these train as features (no image grids in the figures); if they are pictures, "
                  f"{save}", stacklevel=4)


def _test_like_train(name: str, path: Path, x: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """x_test in x's dtype (the training split decides whether the data are images or features),
    after checking that the float split is on the uint8 split's pixel scale (0..255). Both splits
    are normalized with the training split's statistics, so a standardized or 16-bit x_test beside
    uint8 x was accepted and trained on, and its test accuracy was chance (0.10 on digits)."""
    _check_one_scale(name, path, x, x_test)
    if x.dtype != np.uint8:
        return x_test.astype(np.float32)
    whole = np.flatnonzero((x_test.reshape(len(x_test), -1) % 1 != 0).any(axis=1))
    if len(whole):  # uint8 images stay images: only whole pixel values convert without loss
        raise HarnessError(
            f"{name}: {path} has x in uint8 but x_test in floats that are not whole pixel values (first: sample "
            f"{int(whole[0])}); save x_test.round().astype(np.uint8), or x as floats (x.astype(np.float32))"
        )
    return x_test.astype(np.uint8)


def _check_one_scale(name: str, path: Path, x: np.ndarray, x_test: np.ndarray) -> None:
    """uint8 pixels (0..255) in one split and floats within [0, 1], or outside 0..255 (standardized,
    16-bit), in the other are two scales: both are normalized with the training split's statistics,
    so the test accuracy was silently that of images on another scale."""
    ints, floats = (x, x_test) if x.dtype == np.uint8 else (x_test, x)
    if not (floats.size and ints.size):
        return
    int_key, float_key = ("x", "x_test") if ints is x else ("x_test", "x")
    low, high = float(floats.min()), float(floats.max())
    fix = (f"save both as uint8 (({float_key} * 255).round().astype(np.uint8) for floats in [0, 1]) "
           f"or both as floats on one scale")
    if int(ints.max()) > 1 and low >= 0.0 and high <= 1.0:
        raise HarnessError(f"{name}: {path} has {int_key} in uint8 (0..{int(ints.max())}) but {float_key} in floats "
                           f"within [0, 1]: two scales, so one split would be normalized wrongly; {fix}")
    if low < 0.0 or high > 255.0:
        raise HarnessError(f"{name}: {path} has {int_key} in uint8 (0..{int(ints.max())}) but {float_key} in floats "
                           f"from {low:.4g} to {high:.4g}, outside 0..255 (standardized? 16-bit?): two scales, so "
                           f"one split would be normalized wrongly; {fix}")


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
        if path.suffix.lower() in _TEXT_TABLES:
            raise HarnessError(f"{name}: {path} is a text table, which npz: does not read; convert it once to a .npz "
                               "of numbers (x) and class ids (y), as docs/datasets.md shows for a CSV file")
        raise HarnessError(f"{name}: cannot read {path} as a .npz file (not a zip archive); {save_hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_npz_member(name, path, archive, info, save_hint)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except HarnessError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:  # zlib: a damaged savez_compressed
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
        except (ValueError, SyntaxError, tokenize.TokenError) as exc:  # numpy parses a damaged header as Python
            raise HarnessError(f"{name}: member {member!r} of {path} is not a numpy array ({exc}); "
                               f"{save_hint}") from exc
        header = f.tell()
    if dtype.hasobject:  # object arrays need pickle, which a data file must not run
        raise HarnessError(f"{name}: {path} holds an object array ({member!r}); save numbers, and class names "
                           f"as a str array (np.array(names, dtype=str))")
    needed = math.prod(shape) * dtype.itemsize
    if needed > info.file_size - header:
        raise HarnessError(f"{name}: member {member!r} of {path} declares shape {shape} ({needed:,} bytes) but "
                           f"holds {info.file_size - header:,} bytes: the file is damaged; save it again")


def _npz_features(name: str, key: str, x: np.ndarray, allow_empty: bool = False,
                  path: Path | None = None) -> np.ndarray:
    """Bring x to (N, C, H, W): uint8 stays as is, other real dtypes become finite float32 (checked in the
    stored dtype: a finite float64 beyond float32's range is named as such, not as an inf)."""
    if x.ndim < 2 or x.ndim > 4:
        fix = structured_fix(key, x)
        raise HarnessError(f"{name}: {key} has shape {x.shape}; expected (N, D) features, (N, H, W) or (N, C, H, W) "
                           f"images{'; ' + fix if fix else ''}")
    if (len(x) == 0 and not allow_empty) or (len(x) and x.size == 0):
        raise HarnessError(f"{name}: {key} is empty (shape {x.shape}); it needs at least one sample and one feature")
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
            raise HarnessError(f"{name}: {key} has dtype {x.dtype}; save real numbers (float32, or uint8 images)")
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1) if len(x) else np.ones(0, dtype=bool)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            columns = np.flatnonzero(~np.isfinite(x).all(axis=0))[:10].tolist() if x.ndim == 2 else None
            where = f", in feature(s) {columns}" if columns else ""  # a table: the columns to impute
            raise HarnessError(f"{name}: {key} has NaN or inf in {len(bad)} sample(s) (first: {bad[:5].tolist()})"
                               f"{where}; drop or impute them before saving")
        check_float32_range(name, key, x)
        stored, x = x, x.astype(np.float32)
        warn_lost_precision(name, path or Path(name), key, stored, x)
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):  # gray, RGB, RGBA
        raise HarnessError(
            f"{name}: {key} has shape {x.shape}, which looks channels-last (N, H, W, C); "
            f"save x.transpose(0, 3, 1, 2) (channels first)"
        )
    if x.ndim == 2:
        return x[:, :, None, None]
    if x.ndim == 3:
        return x[:, None, :, :]
    return x


def _npz_labels(name: str, key: str, y: np.ndarray, n: int, test: bool = False, named: bool = False) -> np.ndarray:
    """`y` as int64 class ids, refused with the fix when it is not (`test`: the file has a test split, and
    a fix must number it by the same classes as y; `named`: it holds `classes`, which whole numbers index)."""
    if y.ndim == 2 and len(y) == n and y.size:  # a column, or one-hot rows / scores per class
        raise HarnessError(f"{name}: {key} has shape {y.shape} but must be ({n},), one class id per sample; "
                           f"{label_matrix_fix(key, y)}")
    if y.ndim != 1 or len(y) != n:
        raise HarnessError(f"{name}: {key} has shape {y.shape} but must be ({n},), one class id per sample")
    if not y.size:  # an empty test split: np.array([]) is float64, a dtype no label was given in (review31b)
        return y.astype(np.int64)
    if y.dtype.kind in "US":  # class names: the ids and the names both need saving
        example = f", e.g. {str(y.flat[0])!r}" if y.size else ""
        raise HarnessError(
            f"{name}: {key} holds text labels ({y.dtype}{example}) but must hold integer class ids 0..C-1; "
            f"{text_label_fix(key, test, named)}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise HarnessError(f"{name}: {key} has dtype {y.dtype} but must hold integer class ids 0..C-1; "
                           f"{number_label_fix(key, y, test, named)}")
    if len(y) and y.dtype.kind == "u" and int(y.max()) > np.iinfo(np.int64).max:
        raise HarnessError(f"{name}: {key} has class id {int(y.max())}; class ids must be 0..C-1")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise HarnessError(f"{name}: {key} has negative class id {int(y.min())}; class ids must be 0..C-1: "
                           f"{negative_named_fix(key) if named else remap_fix(key, test)}")
    return y


#: How to fix labels that leave a class empty, for an `npz:` file.
_NPZ_REMAP = ("remap with np.unique(y, return_inverse=True)[1] (and save classes without the unused names); "
              "ids must be 0..C-1 with every class present")


def _npz_classes(name: str, classes: np.ndarray | None, y: np.ndarray, y_test: np.ndarray,
                 fix: str = _NPZ_REMAP, saved: bool = False) -> list[str]:
    """Class names from `classes`, else 0..max(y); every id must be a class, every class must train.

    `fix` says how to repair labels that leave a class without training samples (`hf:` shares
    these rules with its own advice); `saved`: the labels are arrays the user saves (`npz:`), so ids
    1..C beside C names are told to save y - 1."""
    if classes is not None:
        if classes.ndim != 1 or len(classes) < 1:
            raise HarnessError(f"{name}: classes must be a 1-D array of at least 2 names, got shape {classes.shape}")
        if len(classes) == 1:  # the same words as labels of one class without `classes`
            raise HarnessError(f"{name}: the labels hold a single class ({_class_name(name, classes[0])!r}); a "
                               "classifier needs at least 2")
        names = [_class_name(name, c) for c in classes.tolist()]
        if len(set(names)) != len(names):
            raise HarnessError(f"{name}: classes has duplicate names; give every class a distinct name")
        top = max(int(y.max()), int(y_test.max()) if len(y_test) else 0)
        if top >= len(names):  # ids 1..C index no name 0: say the shift (whole-float labels are told astype here)
            low = min(int(y.min()), int(y_test.min()) if len(y_test) else 1)
            shift = f": ids 1..{len(names)} start at 1, save y - 1{' and y_test - 1' if len(y_test) else ''}" \
                if saved and low == 1 and top == len(names) else ""
            raise HarnessError(
                f"{name}: class id {top} is out of range for {len(names)} classes; ids must be 0..{len(names) - 1}"
                f"{shift}"
            )
        _require_every_class(name, names, y, fix)
        return names
    num = int(y.max()) + 1
    if num > len(y):  # checked before anything of size num is allocated (a huge id once asked for 8 TiB)
        raise HarnessError(
            f"{name}: y has class id {num - 1} but only {len(y)} samples, so not every class 0..{num - 1} can "
            f"occur; {fix}"
        )
    if len(y_test) and int(y_test.max()) >= num:
        raise HarnessError(
            f"{name}: y_test has class id {int(y_test.max())} but y only has ids up to {num - 1}; "
            f"every test class must occur in training"
        )
    names = [str(c) for c in range(num)]
    _require_every_class(name, names, y, fix)
    return names


def _class_name(name: str, value: object, key: str = "classes") -> str:
    """A class (or sample, `key`) name as text. It is written into the suspects CSVs (UTF-8): bytes that
    are not UTF-8 (Latin-1 `b'caf\\xe9'`) raised UnicodeDecodeError, a traceback, instead of naming the fix."""
    try:
        text = value.decode() if isinstance(value, bytes) else str(value)
        text.encode()
    except UnicodeError:
        what = "class name" if key == "classes" else f"{key} name"
        raise HarnessError(f"{name}: {what} {value!r} is not valid UTF-8 text; save {key} as str, e.g. "
                           f"{key}=np.array([c.decode('latin-1') for c in {key}])") from None
    return text
