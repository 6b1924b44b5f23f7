"""`hf:PATH`: a Hugging Face dataset saved with `save_to_disk`, images or text.

    --dataset hf:/data/cifar_hf                                  # image column found by its feature type
    --dataset "hf:/data/sst2,text=sentence,tokenizer=/models/tok,max_length=64"

Options follow the path as `,KEY=VALUE` (they are part of the dataset's name, so they travel to
every worker and into the store's addresses with no extra flag):

    image=COLUMN      the image column (a `datasets.Image` feature); default: the one Image column
    text=COLUMN       the text column (strings); default: the one string column, when there is no image
    label=COLUMN      integer class ids or a ClassLabel; default: `label`, else `labels`
    tokenizer=NAME    text only, required: a tokenizer directory (`save_pretrained`) or a Hub name
                      (loaded with transformers.AutoTokenizer; offline unless already cached)
    max_length=N      text only: tokens kept per sample (default 128)
    split=NAME        the training split of a DatasetDict (default `train`)
    test=NAME|none    the test split (default `test` when it exists)

Samples are in the stored row order (row i is sample i). Images must share one size and be 8-bit;
they become uint8 (N, C, H, W), gray when every image is gray, else RGB (`harness.datasets.pixels`,
the rule `imagefolder:` follows too). Text becomes int64 token ids (N, L, 1, 1), tokenizer id + 1
with 0 for padding, L = min(max_length, longest sample), for the text models of the registry
(`text_bow`, `text_cnn`; `harness.datasets.hf_text`). Labels are validated as `npz:`'s are: every
class occurs in training (`harness.datasets.hf_labels`).

The fingerprint is a SHA-256 of what the model sees (the decoded images or token ids, the labels
and the class names), so the same saved dataset always gets the same store addresses
and an edited row, another tokenizer or another column gets new ones.

`datasets` (and for text `transformers`) is imported only here, when such a dataset is loaded:
`pip install memprox[hf]`.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset, LoadRequest, _make, _test_keep, register_dataset
from harness.datasets.hf_labels import class_ids, class_names, label_column, test_class_ids
from harness.datasets.hf_text import pad, tokenize
from harness.datasets.names import saved_by_save_to_disk
from harness.datasets.pixels import decode_row, match_splits, stack
from harness.errors import HarnessError
from harness.values import expand_home

__all__ = ["HFOptions", "parse_hf_name"]

_labels = class_ids  # its name here before hf_labels.py: `from harness.datasets.hf import _labels` works

_OPTIONS = ("image", "text", "label", "tokenizer", "max_length", "split", "test")
_OPTION_RE = re.compile(r",([A-Za-z_][A-Za-z0-9_]*)=")
_SAVE_HINT = "save it with `dataset.save_to_disk(PATH)` (a Dataset or a DatasetDict with a train split)"
_DEFAULT_MAX_LENGTH = 128
_FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class HFOptions:
    path: str
    image: str | None = None
    text: str | None = None
    label: str | None = None
    tokenizer: str | None = None
    max_length: int = _DEFAULT_MAX_LENGTH
    split: str = "train"
    test: str | None = None  # None: "test" when present; "none": no test split


def parse_hf_name(name: str, rest: str) -> HFOptions:
    """`PATH,key=value,...` -> options; an unknown key or a bad value is an error naming the valid ones."""
    cuts = [m for m in _OPTION_RE.finditer(rest)]
    path = rest[: cuts[0].start()] if cuts else rest
    values: dict[str, str] = {}
    for i, m in enumerate(cuts):
        key = m.group(1)
        end = cuts[i + 1].start() if i + 1 < len(cuts) else len(rest)
        value = rest[m.end() : end]
        if key not in _OPTIONS:
            raise HarnessError(f"{name}: unknown option {key!r}; hf: takes {', '.join(k + '=' for k in _OPTIONS)} "
                               "(e.g. hf:PATH,text=sentence,tokenizer=DIR)")
        if key in values:
            raise HarnessError(f"{name}: option {key}= given twice")
        if not value:
            raise HarnessError(f"{name}: option {key}= needs a value")
        values[key] = value
    if not path:
        raise HarnessError(f"{name}: hf needs a path: use --dataset hf:/path/saved/with/save_to_disk")
    max_length = _DEFAULT_MAX_LENGTH
    if "max_length" in values:
        raw = values.pop("max_length")
        if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
            raise HarnessError(f"{name}: max_length={raw} must be a positive integer (tokens per sample)")
        max_length = int(raw)
    if "image" in values and "text" in values:
        raise HarnessError(f"{name}: give image= or text=, not both (one input column per dataset)")
    if "tokenizer" in values and "image" in values:
        raise HarnessError(f"{name}: tokenizer= is for text datasets; drop it or use text=COLUMN")
    return HFOptions(path=path, max_length=max_length, **values)


@register_dataset(
    "hf",
    "a Hugging Face dataset saved with save_to_disk; options ,image=COL ,text=COL ,label=COL ,tokenizer=NAME_OR_DIR "
    ",max_length=N ,split=NAME ,test=NAME|none (extra memprox[hf])",
    takes_path=True,
)
def _load_hf(request: LoadRequest) -> Dataset:
    assert request.path is not None  # load_dataset checked it
    name = request.name
    opts = parse_hf_name(name, request.path)
    path = expand_home(opts.path, f"--dataset {name}")
    if not path.exists():
        spaced = " (options follow the path as ,KEY=VALUE, no space after a comma)" if ", " in str(path) else ""
        raise HarnessError(f"{name}: {path} does not exist{spaced}; pass hf:PATH, a folder written by "
                           "`dataset.save_to_disk(PATH)` (a Dataset or a DatasetDict with a train split)")
    if not path.is_dir():
        raise HarnessError(f"{name}: {path} is a file, not a folder; {_SAVE_HINT}")
    is_dict = (path / "dataset_dict.json").is_file()
    if not saved_by_save_to_disk(path):
        found = sorted(p.name for p in path.iterdir())[:8]
        hint = " (it holds images: use --dataset imagefolder:PATH)" if _has_images(path) else ""
        raise HarnessError(f"{name}: {path} is not a dataset saved with save_to_disk (no state.json and "
                           f"dataset_info.json, nor dataset_dict.json; it holds {found or 'nothing'}){hint}; "
                           f"{_SAVE_HINT}")
    datasets = _import("datasets", name)
    if not is_dict and _empty_state(path):
        raise HarnessError(f"{name}: the saved dataset {path} is empty (0 rows); it needs at least one sample "
                           "per class")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise HarnessError(f"{name}: datasets.load_from_disk cannot read {path} ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); the folder may be damaged or empty; {_SAVE_HINT}") from exc
    train, test = _splits(name, opts, loaded, is_dict)
    label = label_column(name, opts.label, train)
    column_kind, column = _input_column(name, opts, train, label)
    if test is not None:
        _require_columns(name, test, "test", [column, label])
    y = class_ids(name, train, label, "train")
    y_test = test_class_ids(name, train, test, label) if test is not None else y[:0]
    classes = class_names(name, train, label, y, y_test)
    if column_kind == "image":
        x = _images(name, train, column)
        has_test = test is not None and len(test) > 0
        x_test = _images(name, test, column) if has_test else np.zeros((0, *x.shape[1:]), np.uint8)
        if len(x_test) and x_test.shape[1:] != x.shape[1:]:
            x, x_test = match_splits(name, x, x_test)
    else:
        tokenizer = _tokenizer(name, opts)
        ids = tokenize(name, tokenizer, train, column, opts.max_length, "training")
        ids_test = tokenize(name, tokenizer, test, column, opts.max_length, "test") if test is not None else []
        width = max([len(r) for r in ids] + [len(r) for r in ids_test] + [1])
        x, x_test = pad(ids, width), pad(ids_test, width)
    fingerprint = _fingerprint(column_kind, x, y, x_test, y_test, classes)
    dataset = _make(name, x, y, x_test, y_test, classes, request.subset, fingerprint=fingerprint, keep_dtype=True)
    if column_kind == "image":
        return dataset
    texts = train[column][: dataset.n_train]  # a suspect's text is what its reader needs, not its row number
    test_texts = None
    if test is not None:  # the test texts kept, as `_make` kept their ids
        every = test[column][:]  # the column at once, a list: a row at a time is a Dataset lookup each
        test_texts = tuple(every[int(i)] for i in _test_keep(np.asarray(y_test), request.subset))
    return replace(dataset, sample_names=tuple(texts), test_sample_names=test_texts)


# --------------------------------------------------------------------------------------------
# splits and columns


def _import(module: str, name: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise HarnessError(f"{name}: needs the `{module}` package: pip install 'memprox[hf]'") from exc


def _empty_state(folder: Path) -> bool:
    """A Dataset folder whose state.json lists no data files: datasets cannot load it back."""
    try:
        return json.loads((folder / "state.json").read_text(encoding="utf-8")).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def _has_images(path: Path) -> bool:
    exts = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
    return any(p.suffix.lower() in exts for p in list(path.rglob("*"))[:200])


def _splits(name: str, opts: HFOptions, loaded: Any, is_dict: bool) -> tuple[Any, Any | None]:
    if not is_dict:
        if opts.test not in (None, "none") or opts.split != "train":
            raise HarnessError(f"{name}: the saved dataset has no splits (a single Dataset), so split= and test= do "
                               f"not apply; save a DatasetDict for a test split")
        train, test = loaded, None
    else:
        splits = list(loaded.keys())
        if opts.split not in loaded:
            raise HarnessError(f"{name}: the saved DatasetDict has no {opts.split!r} split (it has {splits}); "
                               f"pick one with split=NAME")
        train = loaded[opts.split]
        if opts.test == "none":
            test = None
        elif opts.test is not None:
            if opts.test not in loaded:
                raise HarnessError(f"{name}: the saved DatasetDict has no {opts.test!r} split (it has {splits}); "
                                   f"pick one with test=NAME, or test=none")
            if opts.test == opts.split:  # held-out accuracy would be measured on the training rows
                raise HarnessError(f"{name}: test={opts.test} is the training split; pick another split, or test=none")
            test = loaded[opts.test]
        else:
            test = loaded["test"] if "test" in loaded and opts.split != "test" else None
            held = [s for s in splits if s.lower() in ("validation", "valid", "val", "dev") and s != opts.split]
            if test is None and held:  # as imagefolder: warns of a val/ beside train/
                warnings.warn(f"{name}: the DatasetDict has no 'test' split, so the dataset has no test split; "
                              f"{held} is not read: pass test={held[0]} to use it as the test split", stacklevel=5)
    if len(train) == 0:
        raise HarnessError(f"{name}: the training split is empty (0 rows); it needs at least one sample per class")
    return train, test


def _require_columns(name: str, split: Any, split_name: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise HarnessError(f"{name}: the {split_name} split has no column {missing[0]!r} (it has "
                           f"{split.column_names}); give it the training split's columns, or test=none")


def _input_column(name: str, opts: HFOptions, train: Any, label: str) -> tuple[str, str]:
    """('image' | 'text', column), from the options or, when unique, from the features' types
    (the label column is never the input)."""
    import datasets

    features = train.features
    cols = [c for c in train.column_names if c != label]
    for given in (opts.image, opts.text):
        if given is not None and given == label:
            raise HarnessError(f"{name}: column {given!r} is the label column; the input must be another column "
                               f"(columns: {train.column_names}), or set label=COLUMN")
    image_cols = [c for c in cols if isinstance(features[c], datasets.Image)]
    text_cols = [c for c in cols if isinstance(features[c], datasets.Value) and features[c].dtype in ("string",
                                                                                                       "large_string")]
    if opts.image is not None:
        if opts.image not in cols:
            raise HarnessError(f"{name}: no image column {opts.image!r}; the dataset has columns {train.column_names} "
                               f"(set image=COLUMN)")
        if opts.image not in image_cols:
            raise HarnessError(f"{name}: column {opts.image!r} is {features[opts.image]!r}, not an Image feature; "
                               f"cast it with dataset.cast_column({opts.image!r}, datasets.Image()), or use text= "
                               f"for a text column")
        return "image", opts.image
    if opts.text is not None:
        if opts.text not in cols:
            raise HarnessError(f"{name}: no text column {opts.text!r}; the dataset has columns {train.column_names} "
                               f"(set text=COLUMN)")
        if opts.text not in text_cols:
            raise HarnessError(f"{name}: column {opts.text!r} is {features[opts.text]!r}, not strings; "
                               f"text=COLUMN needs a string column")
        if opts.tokenizer is None:
            raise HarnessError(f"{name}: a text dataset needs tokenizer=NAME_OR_DIR (a folder saved with "
                               f"save_pretrained, or a Hub name already in the cache)")
        return "text", opts.text
    if len(image_cols) == 1:
        if opts.tokenizer is not None:
            raise HarnessError(f"{name}: tokenizer= is for text, but the input column found is the image column "
                               f"{image_cols[0]!r}; set text=COLUMN for a text column")
        return "image", image_cols[0]
    if not image_cols and len(text_cols) == 1 and opts.tokenizer is not None:
        return "text", text_cols[0]
    if not image_cols and len(text_cols) == 1:
        raise HarnessError(f"{name}: column {text_cols[0]!r} holds text: add tokenizer=NAME_OR_DIR (and "
                           f"text={text_cols[0]} to be explicit)")
    found = f"Image columns {image_cols}, string columns {text_cols}"
    raise HarnessError(f"{name}: cannot tell the input column ({found}; all columns {train.column_names}); set "
                       f"image=COLUMN or text=COLUMN,tokenizer=NAME_OR_DIR")


# --------------------------------------------------------------------------------------------
# inputs


def _images(name: str, split: Any, column: str) -> np.ndarray:
    """Decoded uint8 (N, C, H, W) by `imagefolder:`'s rule (`harness.datasets.pixels`, rows opened as it opens
    files: `decode_row`): gray when every image is gray, else RGB; modes wider than 8 bits refused; one size."""
    feature = split.features[column]
    rows = split.cast_column(column, replace(feature, decode=False)) if feature.decode else split
    arrays: list[np.ndarray] = []
    for start in range(0, len(rows), 1024):
        for i, value in enumerate(rows[start : start + 1024][column], start):
            arrays.append(decode_row(value, feature.mode, f"{name}: the image of row {i} (column {column!r})"))
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise HarnessError(f"{name}: images in column {column!r} have {len(sizes)} sizes (e.g. "
                           f"{sorted(sizes)[:3]}); resize them to one size before save_to_disk")
    return stack(arrays)


def _tokenizer(name: str, opts: HFOptions) -> Any:
    transformers = _import("transformers", name)
    given = opts.tokenizer
    assert given is not None  # a text column without tokenizer= was refused with the columns (_input_column)
    folder = expand_home(given, f"{name}: tokenizer=")
    if (given.startswith(("/", ".", "~")) or given.count("/") > 1) and not folder.is_dir():
        # a folder's typo reached the Hub's name check ("Repo id must be in the form 'repo_name'..."); a
        # Hub id is NAME or ORG/NAME
        raise HarnessError(f"{name}: tokenizer folder {folder} does not exist; pass the folder you saved with "
                           "tokenizer.save_pretrained(DIR) (a Hub name has no leading . or ~)")
    try:
        return transformers.AutoTokenizer.from_pretrained(opts.tokenizer)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{name}: cannot load tokenizer {opts.tokenizer!r} ({str(exc).splitlines()[0][:200]}); "
                           "pass a folder saved with tokenizer.save_pretrained(DIR), or a Hub name that is cached "
                           "(tests and offline machines set HF_HUB_OFFLINE=1)") from exc


def _fingerprint(kind: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 classes: list[str]) -> str:
    """SHA-256 of what training sees: the arrays (shape, dtype, bytes) and the class names. Options
    count only through their effect: the same data under an equivalent spelling is the same dataset."""
    h = hashlib.sha256()
    meta = {"v": _FINGERPRINT_VERSION, "kind": kind, "classes": classes}  # the tokenizer shows in the ids
    h.update(json.dumps(meta, sort_keys=True).encode())
    for a in (x, y, x_test, y_test):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
