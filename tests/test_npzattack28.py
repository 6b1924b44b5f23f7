"""Attacks on npz28's checks of an `npz:` file (npzattack28): false alarms on ordinary data, misses, the
label fixes the errors name, and the memory the checks take."""

from __future__ import annotations

import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.datasets import load_dataset, npz_checks
from harness.errors import HarnessError


def _save(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def _silent_load(spec: str):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_dataset(spec)


def _with_column(column: np.ndarray) -> np.ndarray:
    return np.c_[np.random.default_rng(0).normal(size=(len(column), 2)), column]


@pytest.mark.parametrize("value", [0.1, 0.3, 0.7, 3.14159])
def test_a_constant_float64_column_is_not_said_to_lose_its_variation(tmp_path: Path, value: float) -> None:
    """np.full(60, 0.1).std() is 9.7e-17, not 0: a constant column was warned about as a feature that
    'varies by less than float32 resolves' and 'loses most of that variation', which it does not have."""
    assert np.full(60, value).std() > 0  # the float64 rounding the check took for a spread
    x = _with_column(np.full(60, value))
    dataset = _silent_load(_save(tmp_path, x=x, y=np.arange(60) % 3))
    assert torch.equal(dataset.x_train[:, :, 0, 0], torch.from_numpy(x.astype(np.float32)))


@pytest.mark.parametrize("column", [
    1e6 + 3 * np.random.default_rng(1).normal(size=500),  # float32 steps of 0.0625 on a spread of 3
    1.7e9 + np.random.default_rng(2).uniform(0, 6 * 3600, 500),  # unix seconds over 6 hours: steps of 128 s
], ids=["1e6+-3", "unix-seconds-6h"])
def test_a_feature_float32_keeps_is_not_warned_about(tmp_path: Path, column: np.ndarray) -> None:
    """float32 kept these to within 0.6 % of their spread (correlation 0.99998 with the float64 values), yet
    the warning said they 'lose most of that variation': it fired when one value moved by 1 % of the std."""
    x = _with_column(column)
    cast = x[:, 2].astype(np.float32).astype(np.float64)
    assert np.corrcoef(x[:, 2], cast)[0, 1] > 0.9999
    _silent_load(_save(tmp_path, x=x, y=np.arange(500) % 3))


def test_the_precision_warning_gives_the_share_float32_loses(tmp_path: Path) -> None:
    x = _with_column(1e6 + 1e-2 * np.random.default_rng(3).normal(size=60))
    with pytest.warns(UserWarning, match=r"feature\(s\) \[2\]") as caught:
        load_dataset(_save(tmp_path, x=x, y=np.arange(60) % 3))
    text = str(caught[0].message)
    share = np.std(x[:, 2] - x[:, 2].astype(np.float32)) / np.std(x[:, 2])  # 0.998: the feature is lost
    assert f"rounding error has {share:.0%} of its spread" in text and "values near 1e+06" in text, text


def test_int32_timestamps_float32_cannot_resolve_are_warned_about(tmp_path: Path) -> None:
    """int32 holds unix seconds exactly, float32 only in steps of 128 s: 10 minutes of timestamps became
    5 values, silently (only types wider than 4 bytes were checked)."""
    seconds = (1_700_000_000 + np.random.default_rng(4).integers(0, 600, 200)).astype(np.int32)
    assert len(np.unique(seconds.astype(np.float32))) <= 6
    x = np.c_[np.random.default_rng(5).integers(0, 100, (200, 2)), seconds].astype(np.int32)
    with pytest.warns(UserWarning, match=r"feature\(s\) \[2\]"):
        load_dataset(_save(tmp_path, x=x, y=np.arange(200) % 2))
    _silent_load(_save(tmp_path, x=x[:, :2], y=np.arange(200) % 2))  # small int32 counts: exact in float32


def test_a_value_float32_rounds_to_its_max_loads_and_only_overflow_is_refused(tmp_path: Path) -> None:
    """3.4028235e38 is how numpy prints float32's max; as float64 it lies just above it, and the cast rounds it
    to the max: it loaded at f410fdc and was refused as 'beyond float32's range'. 2**128 - 2**103 is the
    first value the cast makes inf."""
    x = np.random.default_rng(0).normal(size=(60, 3))
    x[4, 1] = 3.4028235e38
    x[6, 0] = -3.4028235e38
    dataset = _silent_load(_save(tmp_path, x=x, y=np.arange(60) % 3))
    assert dataset.x_train[4, 1, 0, 0].item() == float(np.finfo(np.float32).max)
    assert dataset.x_train[6, 0, 0, 0].item() == -float(np.finfo(np.float32).max)
    x[9, 2] = -(2.0**128 - 2.0**103)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(HarnessError, match=r"beyond float32's range .* in 1 sample\(s\) \(first: \[9\]\)"):
            load_dataset(_save(tmp_path, x=x, y=np.arange(60) % 3))


@pytest.mark.parametrize(("bad", "said"), [
    ([7], r"1 row\(s\) with no 1 \(first: \[7\]\)"),
    ([3, 11], r"2 row\(s\) with several 1s \(first: \[3, 11\]\)"),
])
def test_one_hot_rows_argmax_would_label_silently_are_named(tmp_path: Path, bad: list[int], said: str) -> None:
    """y.argmax(axis=1), the fix the error named, gives an all-zero row class 0 and a row of two 1s its first
    class, silently: those rows are named, and argmax is not offered for them."""
    y = np.eye(3, dtype=np.int64)[np.arange(60) % 3]
    for i in bad:
        y[i] = 0 if len(bad) == 1 else 1
    with pytest.raises(HarnessError, match=said) as err:
        load_dataset(_save(tmp_path, x=_with_column(np.arange(60.0)), y=y))
    assert "give those rows their class (or drop them), then save y.argmax(axis=1)" in str(err.value)


def _suggested(text: str) -> str:
    """The Python the error says to save (after 'save ')."""
    found = re.search(r"save (y\.argmax\(axis=1\)|y\.ravel\(\)|y\.astype\(np\.int64\)|"
                      r"np\.unique\(y, return_inverse=True\)\[1\])", text)
    assert found, text
    return found.group(1)


@pytest.mark.parametrize("y", [
    np.eye(4)[np.arange(60) % 4],
    np.random.default_rng(6).dirichlet(np.ones(4), 60),  # scores per class
    (np.arange(60) % 4)[:, None],
    np.arange(60) % 4 - 2,
    (np.arange(60) % 4) * 10 - 15,
    (np.arange(60) % 4).astype(np.float64),
    (np.arange(60) % 4) / 2 + 0.25,  # 0.25, 0.75, 1.25, 1.75: astype(np.int64) made 2 classes of 4
], ids=["one-hot", "scores", "column", "negative", "sparse-negative", "whole-floats", "fractions"])
def test_the_line_each_label_error_names_runs_and_maps_the_labels(tmp_path: Path, y: np.ndarray) -> None:
    """The fix is taken from the error's text and run as written: it loads, and maps every row as stated."""
    x = _with_column(np.arange(60.0))
    with pytest.raises(HarnessError) as err:
        load_dataset(_save(tmp_path, x=x, y=y))
    fixed = eval(_suggested(str(err.value)), {"np": np, "y": y})  # noqa: S307 - the error's own text
    extra = {"classes": np.unique(y).astype(str)} if "unique" in str(err.value) else {}
    dataset = _silent_load(_save(tmp_path, x=x, y=fixed, **extra))
    expected = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else np.searchsorted(np.unique(y), y.ravel())
    assert torch.equal(dataset.y_train, torch.from_numpy(expected.astype(np.int64)))
    if extra:
        assert [dataset.classes[i] for i in dataset.y_train.tolist()] == [str(v) for v in y.tolist()]


def test_the_text_label_error_line_runs(tmp_path: Path) -> None:
    labels = np.array(["cat", "dog", "ant"] * 20)
    x = _with_column(np.arange(60.0))
    with pytest.raises(HarnessError, match=r"save classes, y = np\.unique\(labels, return_inverse=True\)"):
        load_dataset(_save(tmp_path, x=x, y=labels))
    classes, y = np.unique(labels, return_inverse=True)
    dataset = _silent_load(_save(tmp_path, x=x, y=y, classes=classes))
    assert [dataset.classes[i] for i in dataset.y_train.tolist()] == labels.tolist()


@pytest.mark.parametrize(("d", "shape"), [(784, "(40, 28, 28)"), (3072, "(40, 3, 32, 32)"), (5, None)])
def test_a_flattened_uint8_image_table_is_told_the_reshape(tmp_path: Path, d: int, shape: str | None) -> None:
    """(N, 784) uint8 is MNIST saved flattened: the warning's advice named (N, H, W) without H and W; for a
    square (or 3 x a square) row length it names the reshape, and for other widths none."""
    x = np.random.default_rng(d).integers(0, 256, (40, d), dtype=np.uint8)
    with pytest.warns(UserWarning, match="reads as images saved flattened") as caught:
        load_dataset(_save(tmp_path, x=x, y=np.arange(40) % 2))
    text = str(caught[0].message)
    if shape is None:
        assert "x.reshape(40, H, W)" in text
    else:
        assert f"x.reshape{shape}" in text, text
        reshaped = eval(f"x.reshape{shape}", {"x": x})  # noqa: S307 - the warning's own text
        assert _silent_load(_save(tmp_path, x=reshaped, y=np.arange(40) % 2)).is_image


def test_the_checks_take_no_full_size_temporary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The range check reads min and max (no temporary); the precision check goes a block of columns at a
    time, so its peak is a few blocks, not a float64 copy of the table (8 MB here)."""
    monkeypatch.setattr(npz_checks, "_BLOCK_BYTES", 2**20)
    x = np.random.default_rng(0).normal(size=(2000, 500))
    x[:, 7] += 1e6
    cast = x.astype(np.float32)
    tracemalloc.start()
    try:
        npz_checks.check_float32_range("d", "x", x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            npz_checks.warn_lost_precision("d", Path("d.npz"), "x", x, cast)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20 + 2**19, peak  # x is 8 MB


def _page() -> str:
    return " ".join((Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text(encoding="utf-8").split())


def _share(column: np.ndarray) -> float:
    return float(np.std(column - column.astype(np.float32).astype(np.float64)) / np.std(column))


def test_the_pages_precision_numbers() -> None:
    """datasets.md's examples of the precision warning, recomputed on the columns the tests above load."""
    page = _page()
    assert npz_checks._LOST_SHARE == 0.1 and "more than 10 % of the feature's spread" in page
    lost = 1e6 + 1e-2 * np.random.default_rng(3).normal(size=60)
    seconds = (1_700_000_000 + np.random.default_rng(4).integers(0, 600, 200)).astype(np.int32)
    kept = [1e6 + 3 * np.random.default_rng(1).normal(size=500),
            1.7e9 + np.random.default_rng(2).uniform(0, 6 * 3600, 500)]
    assert len(np.unique(lost.astype(np.float32))) <= 2
    assert f"(an error of {_share(lost) * 100:.0f} % of the spread)" in page
    assert f"unix seconds over 10 minutes, {len(np.unique(seconds.astype(np.float32)))} values " \
           f"({_share(seconds.astype(np.float64)) * 100:.0f} %)" in page
    assert max(_share(c) for c in kept) < 0.007 and "spread to within 0.7 %" in page
    overflow = npz_checks._OVERFLOW
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(overflow)) and np.float32(np.nextafter(overflow, 0)) == np.finfo(np.float32).max
    assert f"|x| ≥ 2^128 − 2^103, about {overflow:.8g}".replace("e+38", "e38") in page


@pytest.mark.slow
def test_the_mislabeled_task_on_a_file_with_its_own_wrong_labels_scores_as_the_page_says(tmp_path: Path) -> None:
    """digits, 180 labels flipped (default_rng(12345)), --tasks mislabeled --noise-rates 0.1, quick, seeds 0-2:
    CSL's AUROC 0.933 to 0.937; 0.982 to 0.987 when the file's wrong labels the task left alone are not counted as
    clean (left out of the negatives; leaving all 180 out gives 0.990 to 0.999)."""
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_auc_score

    from harness import run_experiment

    digits = load_digits()
    y = digits.target.copy()
    rng = np.random.default_rng(12345)
    flip = rng.choice(len(y), 180, replace=False)
    y[flip] = (y[flip] + rng.integers(1, 10, 180)) % 10
    np.savez(tmp_path / "mine.npz", x=digits.data.astype(np.float32), y=y)
    run_experiment(dataset=f"npz:{tmp_path / 'mine.npz'}", proxies="csl", tasks="mislabeled", seeds=3,
                   noise_rates=[0.1], out=str(tmp_path / "out"), store=str(tmp_path / "store"), executor="inprocess",
                   progress=False)
    whole, negatives_true = [], []
    for seed in range(3):
        scores = pd.read_csv(tmp_path / "out" / "scores" / f"noise=0.1_seed{seed}.csv")
        positive, csl = scores["positive"].to_numpy(dtype=bool), scores["csl"].to_numpy(dtype=float)
        counted = ~(np.isin(scores["index"].to_numpy(), flip) & ~positive)
        whole.append(round(roc_auc_score(positive, csl), 3))
        negatives_true.append(round(roc_auc_score(positive[counted], csl[counted]), 3))
    said = re.search(r"CSL's AUROC was (0\.\d+) to (0\.\d+); with the file's own wrong labels the task left alone "
                     r"not counted as clean, (0\.\d+) to (0\.\d+)", _page())
    assert said, "datasets.md no longer gives the mislabeled task's AUROCs on the file"
    assert [float(v) for v in said.groups()] == [min(whole), max(whole), min(negatives_true), max(negatives_true)]
