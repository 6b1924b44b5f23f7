"""docs/datasets.md's measurements of a data-quality engineer's own arrays (npz28): wrong labels and
copies already in the file, the tasks that inject their own on top, and a uint8 table read as pixels."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from harness.corruption import symmetric_noise
from harness.datasets import load_dataset
from harness.near_duplicates import find_pairs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


def _page() -> str:
    return " ".join(PAGE.read_text(encoding="utf-8").split())


def _flipped(seed: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """digits' features, its labels with `count` flipped by default_rng(seed), and the flipped indices."""
    digits = load_digits()
    y = digits.target.copy()
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(y), count, replace=False)
    y[flip] = (y[flip] + rng.integers(1, 10, count)) % 10
    return digits.data.astype(np.float32), y, np.sort(flip)


def test_the_mislabeled_tasks_flips_land_on_the_files_own_wrong_labels_as_the_page_says() -> None:
    """The task flips on top of the file's labels, with a generator seeded by the run's seed: how many of
    its flips fall on the 180 labels already wrong, and how many of those give the true label back."""
    said = re.search(r"(\d+) to (\d+) of the task's 180 flips fell on them, (\d+) to (\d+) back to the true label",
                     _page())
    assert said, "datasets.md no longer says how the task's flips meet the file's own"
    truth = load_digits().target
    _, given, flip = _flipped(12345, 180)
    fell, back = [], []
    for seed in range(3):
        noisy, mask = symmetric_noise(given, 10, 0.1, seed)
        on_wrong = mask & np.isin(np.arange(len(given)), flip)
        fell.append(int(on_wrong.sum()))
        back.append(int((noisy[on_wrong] == truth[on_wrong]).sum()))
    assert fell == [21, 21, 17] and back == [3, 5, 2]
    assert [int(g) for g in said.groups()] == [min(fell), max(fell), min(back), max(back)]


def test_the_copies_the_page_plants_in_digits_are_listed_as_images_and_only_exact_ones_as_a_table(
        tmp_path: Path) -> None:
    """12 copies of digits images (4 exact, 4 noisy, 4 brightened; half under another label): as uint8
    (N, 8, 8) all 12 are listed and one pair digits holds; as float features (N, 64) only the exact 4."""
    digits = load_digits()
    images = (digits.images * 15.9375).round().astype(np.uint8)
    rng = np.random.default_rng(1)
    sources = rng.choice(len(images), 12, replace=False)
    copies = []
    for j, s in enumerate(sources):
        pixels = images[s].astype(int)
        copies.append(pixels if j < 4 else np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255) if j < 8
                      else np.clip(pixels + 20, 0, 255))
    x = np.concatenate([images, np.stack(copies).astype(np.uint8)])
    y = np.concatenate([digits.target, [(digits.target[s] + j % 2) % 10 for j, s in enumerate(sources)]])
    n = len(images)
    planted = {(int(s), n + j) for j, s in enumerate(sources)}
    np.savez(tmp_path / "img.npz", x=x, y=y)
    np.savez(tmp_path / "tab.npz", x=x.reshape(len(x), -1).astype(np.float32), y=y)
    as_images = find_pairs(load_dataset(f"npz:{tmp_path / 'img.npz'}").x_train)
    as_table = find_pairs(load_dataset(f"npz:{tmp_path / 'tab.npz'}").x_train)
    assert {(int(a), int(b)) for a, b in zip(as_images["a"], as_images["b"])} == planted | {(1585, 1648)}
    exact = {(int(s), n + j) for j, s in enumerate(sources) if j < 4}
    assert {(int(a), int(b)) for a, b in zip(as_table["a"], as_table["b"])} == exact
    page = _page()
    assert "listed all 12, and one pair of near-equal 1s that digits holds (samples 1,585 and 1,648" in page
    correlation = np.corrcoef(images[1585].ravel().astype(float), images[1648].ravel().astype(float))[0, 1]
    assert digits.target[1585] == digits.target[1648] == 1 and f"1,648, correlation {correlation:.3f})" in page
    assert "only the 4 exact copies were listed" in page


def test_a_uint8_table_lists_the_pairs_the_page_counts(tmp_path: Path) -> None:
    """500 rows of 5 answers 1..5: read as flattened uint8 pixels, 119 pairs; as float32 features, the 39
    rows that equal an earlier one."""
    answers = np.random.default_rng(0).integers(1, 6, (500, 5)).astype(np.uint8)
    y = np.arange(500) % 2
    np.savez(tmp_path / "u8.npz", x=answers, y=y)
    np.savez(tmp_path / "f32.npz", x=answers.astype(np.float32), y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the uint8 table's warning: tests/test_npz28_inputs.py
        pixels = find_pairs(load_dataset(f"npz:{tmp_path / 'u8.npz'}").x_train)
    table = find_pairs(load_dataset(f"npz:{tmp_path / 'f32.npz'}").x_train)
    repeated = len(answers) - len(np.unique(answers, axis=0))
    assert (len(pixels), len(table), repeated) == (119, 39, 39)
    assert "500 rows of 5 answers 1..5: 119 pairs listed, where 39 rows were copies of another" in _page()


@pytest.mark.slow
def test_suspects_on_a_file_with_known_flips_ranks_them_as_the_page_says(tmp_path: Path) -> None:
    """`--tasks suspects` on digits with 179 labels flipped (default_rng(0)), seed 0: CSL's AUROC on the flips
    0.999 and 172 of its top 179 rows flipped; `--noisy-labels` with the true labels as y gives the same."""
    from harness import run_experiment

    x, y, flip = _flipped(0, 179)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    run_experiment(dataset=f"npz:{tmp_path / 'mine.npz'}", proxies="csl", tasks="suspects", seeds=1,
                   out=str(tmp_path / "out"), store=str(tmp_path / "store"), executor="inprocess", progress=False)
    import pandas as pd

    scores = pd.read_csv(tmp_path / "out" / "scores" / "clean_seed0.csv")
    wrong = np.isin(scores["index"].to_numpy(), flip)
    csl = scores["csl"].to_numpy(dtype=float)
    top = np.argsort(-csl, kind="stable")[:len(flip)]
    assert round(roc_auc_score(wrong, csl), 3) == 0.999 and int(wrong[top].sum()) == 172  # 0.99887 (npzattack28)
    assert "AUROC 0.999 for CSL" in _page() and "172 of CSL's top 179 rows were the flipped ones" in _page()
