"""`npz:` inputs a data-quality engineer saves from their own arrays (npz28): values float32 cannot
hold, features float32 cannot resolve, and uint8 tables read as flattened pixels."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.near_duplicates import find_pairs


def _save(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def _table(n: int = 60, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), np.arange(n) % 3


def test_a_finite_value_beyond_float32_is_named_as_such_not_as_inf(tmp_path: Path) -> None:
    """1e300 is finite in the file: the cast to float32 made it inf, so the error said "NaN or inf" of a
    sample that held neither, beside numpy's overflow RuntimeWarning."""
    x, y = _table()
    x[7, 2] = 1e300
    x[9, 0] = -4e38
    spec = _save(tmp_path, x=x, y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" leaked before
        with pytest.raises(HarnessError) as err:
            load_dataset(spec)
    text = str(err.value)
    assert "beyond float32's range" in text and "2 sample(s) (first: [7, 9])" in text
    assert "NaN or inf" not in text and "rescale" in text


def test_nan_and_inf_in_the_file_are_still_named_so(tmp_path: Path) -> None:
    x, y = _table()
    x[3, 1] = np.nan
    x[5, 0] = -np.inf
    with pytest.raises(HarnessError, match=r"NaN or inf in 2 sample\(s\) \(first: \[3, 5\]\)"):
        load_dataset(_save(tmp_path, x=x, y=y))


def test_a_feature_float32_cannot_resolve_is_warned_about(tmp_path: Path) -> None:
    """Values near 1e6 with a spread of 0.01 all became one float32 value: the feature trained as a
    constant, silently."""
    x, y = _table()
    x[:, 1] = 1e6 + x[:, 1] * 1e-2
    with pytest.warns(UserWarning, match=r"feature\(s\) \[1\] vary too little for float32 to resolve") as caught:
        dataset = load_dataset(_save(tmp_path, x=x, y=y))
    assert len(np.unique(dataset.x_train[:, 1].numpy())) <= 2  # what the warning is about
    assert "values near 1e+06" in str(caught[0].message)
    centred = x - x.mean(axis=0)  # the fix the warning names keeps the feature
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = load_dataset(_save(tmp_path, x=centred, y=y))
    assert len(np.unique(kept.x_train[:, 1].numpy())) == 60


def test_ordinary_float64_and_int64_tables_load_without_a_warning(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer, load_wine

    for data in (load_wine(), load_breast_cancer()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dataset = load_dataset(_save(tmp_path, x=data.data, y=data.target))
        assert torch.equal(dataset.x_train[:, :, 0, 0], torch.from_numpy(data.data.astype(np.float32)))
    counts = np.random.default_rng(1).integers(0, 10**6, (60, 3))  # int64 ids and counts: float32 resolves them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(_save(tmp_path, x=counts, y=np.arange(60) % 3))


def test_a_uint8_table_is_said_to_be_read_as_flattened_pixels(tmp_path: Path) -> None:
    """500 rows of 5 answers 1..5 saved as uint8: read as flattened pixels, the duplicate search listed rows
    whose answers merely correlate ([1, 2, 3, 1, 2] beside [2, 3, 4, 2, 3]) as near copies, without a word.
    The warning names the reading and both fixes; the float32 table it advises finds exact copies only."""
    answers = np.random.default_rng(0).integers(1, 6, (500, 5)).astype(np.uint8)
    y = np.arange(500) % 2
    with pytest.warns(UserWarning, match=r"shape \(500, 5\) in uint8, which npz: reads as images saved flattened"):
        as_pixels = load_dataset(_save(tmp_path, x=answers, y=y))
    as_table = load_dataset(_save(tmp_path, x=answers.astype(np.float32), y=y))
    exact = {(a, b) for a in range(500) for b in range(a + 1, 500) if (answers[a] == answers[b]).all()}
    pixel_pairs = find_pairs(as_pixels.x_train)
    table_pairs = find_pairs(as_table.x_train)
    assert {(int(a), int(b)) for a, b in zip(table_pairs["a"], table_pairs["b"])} <= exact
    assert len(pixel_pairs) > 2 * len(table_pairs)  # the correlations of 5 small integers: most are not copies


def test_uint8_images_saved_with_their_shape_load_without_a_warning(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = np.arange(30) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gray = load_dataset(_save(tmp_path, x=images, y=y))
        rgb = load_dataset(_save(tmp_path, x=np.repeat(images[:, None], 3, axis=1), y=y))
    assert tuple(gray.x_train.shape) == (30, 1, 8, 8) and tuple(rgb.x_train.shape) == (30, 3, 8, 8)
    assert gray.is_image and rgb.is_image


@pytest.mark.parametrize(("y", "fix"), [
    (np.eye(3, dtype=np.int64)[np.arange(60) % 3], r"save y\.argmax\(axis=1\) \(one-hot rows"),
    (np.eye(3)[np.arange(60) % 3], r"save y\.argmax\(axis=1\)"),
    ((np.arange(60) % 3)[:, None], r"save y\.ravel\(\)"),
    (np.arange(60) % 3 - 1, r"negative class id -1; .* save np\.unique\(y, return_inverse=True\)\[1\]"),
])
def test_label_shapes_and_values_name_the_line_that_fixes_them(tmp_path: Path, y: np.ndarray, fix: str) -> None:
    """One-hot rows, a column and negative ids were refused without saying how to map them."""
    x, _ = _table()
    with pytest.raises(HarnessError, match=fix):
        load_dataset(_save(tmp_path, x=x, y=y))


def test_the_label_fixes_the_errors_name_load(tmp_path: Path) -> None:
    x, labels = _table()
    onehot, negative = np.eye(3)[labels], labels - 1
    fixed = load_dataset(_save(tmp_path, x=x, y=onehot.argmax(axis=1)))
    assert torch.equal(fixed.y_train, torch.from_numpy(labels))
    mapped = load_dataset(_save(tmp_path, x=x, y=np.unique(negative, return_inverse=True)[1],
                                classes=np.unique(negative).astype(str)))
    assert mapped.classes == ("-1", "0", "1") and torch.equal(mapped.y_train, torch.from_numpy(labels))


def test_a_uint8_table_of_one_to_three_columns_is_warned_about_by_what_it_would_show(tmp_path: Path) -> None:
    """(N, 1) and (N, 3) uint8 load as (N, 1 or 3, 1, 1) images, which the suspects figures drew as 1-pixel
    squares; (N, 2) is neither drawn nor searched as pixels, so it gets no warning."""
    y = np.arange(40) % 2
    for d, said in ((1, "draw each row as a 1-pixel image"), (3, "draw each row as a 1-pixel image"),
                    (2, None), (4, "compares its rows as pixels")):
        x = np.random.default_rng(d).integers(0, 9, (40, d)).astype(np.uint8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = load_dataset(_save(tmp_path, x=x, y=y))
        messages = [str(w.message) for w in caught]
        assert dataset.is_image == (d in (1, 3))
        assert (messages == []) if said is None else (len(messages) == 1 and said in messages[0]), (d, messages)
