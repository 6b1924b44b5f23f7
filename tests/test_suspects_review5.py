"""Review 5 of the suspects task and its duplicate finder: tables of float features (`npz:` (N, D)),
whose rows are compared feature by feature in standard deviations, not as pixels."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine

from harness.near_duplicates import THRESHOLD, find_pairs


def _pairs(table) -> set[tuple[int, int]]:
    return set(zip(table["a"].tolist(), table["b"].tolist()))


def _table(x: np.ndarray) -> torch.Tensor:
    """A table as the npz loader holds it: float32 (N, D, 1, 1)."""
    return torch.from_numpy(x.astype(np.float32)[:, :, None, None])


def _planted(x: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """`count` rows re-measured: another row's values plus 2 % of each feature's spread."""
    x, rng, planted = x.astype(np.float64).copy(), np.random.default_rng(seed), set()
    for a, b in rng.choice(len(x), (count, 2), replace=False):
        x[b] = x[a] + rng.normal(size=x.shape[1]) * x.std(axis=0) * 0.02
        planted.add((int(min(a, b)), int(max(a, b))))
    return x, planted


@pytest.mark.parametrize("loader", [load_wine, load_breast_cancer])
def test_re_measured_rows_of_a_table_are_found_and_nothing_else(loader) -> None:
    """Wine's proline (~1,000) outweighed every other feature in a correlation across a row, so
    copies differing in it were missed and unrelated rows paired; in standard deviations each
    feature counts alike."""
    x, planted = _planted(loader().data, 20, seed=0)
    assert _pairs(find_pairs(_table(x))) == planted


def test_a_two_feature_table_has_no_false_pairs_at_distance_zero() -> None:
    """With D = 2 a centred row is +-(1, -1)/sqrt(2): every row correlated +-1 with every other, and
    thousands of pairs came out at distance 0. The rule is now the brute-force one on standardised
    features with the Euclidean distance."""
    x = np.random.default_rng(1).normal(size=(300, 2)) * [1.0, 1000.0]
    table = find_pairs(_table(x))
    z = x.astype(np.float32).astype(np.float64)
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    distance = np.linalg.norm(z[:, None] - z[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    order = np.argsort(distance, axis=1, kind="stable")[:, :10]
    radius = THRESHOLD * np.median(distance.min(axis=1))
    expected = {(min(i, j), max(i, j)) for i in range(300) for j in order[i] if distance[i, j] <= radius}
    assert 1 <= len(expected) <= 5
    assert _pairs(table) == expected and (table["distance"] > 0).all()
    for a, b, d, *_ in table.itertuples(index=False):
        assert d == pytest.approx(distance[a, b], rel=1e-5)


def test_table_pairs_are_cleanlab_datalabs_on_standardised_features() -> None:
    pytest.importorskip("datasets")  # Datalab needs Hugging Face datasets (the hf extra)
    from cleanlab import Datalab

    x, planted = _planted(load_wine().data, 10, seed=2)
    x = x.astype(np.float32).astype(np.float64)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    lab = Datalab(data={"label": np.zeros(len(x), dtype=int)}, label_name="label", verbosity=0)
    lab.find_issues(features=z, issue_types={"near_duplicate": {"metric": "euclidean"}})
    sets = lab.get_issues("near_duplicate")["near_duplicate_sets"]
    expected = {(min(i, int(j)), max(i, int(j))) for i, s in enumerate(sets) for j in s}
    assert expected == planted
    assert _pairs(find_pairs(_table(x))) == expected


def test_exact_copies_in_a_table_still_pair_at_distance_zero_and_leave_the_median_alone() -> None:
    """More than half the rows exactly copied: the median is taken over the unique rows, so the
    re-measured copy is still found beside the exact ones."""
    x, planted = _planted(load_wine().data, 1, seed=3)
    x = np.concatenate([x, x[:120]])
    table = find_pairs(_table(x))
    exact = {(i, 178 + i) for i in range(120)}
    (near,) = planted
    assert _pairs(table) == exact | {near}  # copies of either row pair with their first copy only
    assert (table["distance"] == 0).sum() == 120


def _flags(x: np.ndarray, labels: np.ndarray) -> dict[int, tuple[str, bool]]:
    from harness.tasks.suspects import partner_columns

    pairs = find_pairs(torch.from_numpy(x))
    pairs["label_a"], pairs["label_b"] = labels[pairs["a"]], labels[pairs["b"]]
    pairs["labels_differ"] = pairs["label_a"] != pairs["label_b"]
    columns = partner_columns(pairs, len(x))
    return {i: (columns["duplicates"][i], bool(columns["duplicate_labels_differ"][i])) for i in range(len(x))}


def test_identical_samples_with_one_label_get_one_conflict_flag() -> None:
    """Copies 0, 3, 5 labelled A, A, B: 3 pairs only with its first copy 0 (A), and was reported
    without a conflict while its own copy 5 is labelled B (0, identical to 3, was flagged)."""
    x = np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % 2
    x[3] = x[5] = x[0]
    labels[[0, 3, 5]] = [0, 0, 1]
    x[11] = x[12] = x[10]  # one picture, one label: no conflict
    labels[[10, 11, 12]] = 1
    flags = _flags(x, labels)
    assert flags[0] == ("3;5", True) and flags[3] == ("0", True) and flags[5] == ("0", True)
    assert flags[10] == ("11;12", False) and flags[11] == ("10", False) and flags[12] == ("10", False)
    assert not any(flags[i][1] for i in range(40) if i not in (0, 3, 5))


def test_a_copy_of_a_sample_near_another_label_is_flagged_too() -> None:
    """3 is byte-equal to 0, and 7 (another label) is a re-encoded 0, so as near to 3: all three
    are flagged; 20 near 21 with one label are not."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (60, 3, 8, 8), dtype=np.uint8)
    labels = np.zeros(60, dtype=np.int64)
    x[3] = x[0]
    x[7] = np.clip(x[0].astype(int) + rng.integers(-4, 5, x[0].shape), 0, 255)
    labels[7] = 1
    x[21] = np.clip(x[20].astype(int) + rng.integers(-4, 5, x[20].shape), 0, 255)
    flags = _flags(x, labels)
    assert flags[0] == ("3;7", True) and flags[3] == ("0", True) and flags[7] == ("0", True)
    assert flags[20] == ("21", False) and flags[21] == ("20", False)


def test_the_duplicates_figure_says_it_draws_the_first_k_over_2_of_all_pairs(tmp_path, monkeypatch) -> None:
    """k = 5 draws 2 of the 6 pairs: the title said "2 duplicate pair(s)", as if there were no more."""
    from types import SimpleNamespace

    import pandas as pd

    import harness.plots as plots
    from harness.tasks.base import EvalContext
    from harness.tasks.suspects import duplicate_pairs

    titles: list[str] = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: (titles.append(fig._suptitle.get_text()),
                                                                 real(fig, path))[1])
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (30, 3, 8, 8), dtype=np.uint8))
    for i in range(6):
        x[20 + i] = x[i]
    labels = torch.arange(30) % 3
    dataset = SimpleNamespace(x_train=x, x_test=x[:0], sample_names=None, is_image=True, classes=("a", "b", "c"))
    ctx = SimpleNamespace(data=SimpleNamespace(dataset=dataset, labels=labels.numpy(), x=x), out=tmp_path, artifacts={},
                          tables={})
    ctx.keep_table = partial(EvalContext.keep_table, ctx)
    pairs = duplicate_pairs(ctx, "near", THRESHOLD, 5)
    assert len(pairs) == 6 and len(pd.read_csv(tmp_path / "suspects" / "duplicates.csv")) == 6
    assert titles == ["the first 2 of 6 duplicate pair(s), different labels first (d = 1 - pixel correlation)"]
    titles.clear()
    duplicate_pairs(ctx, "near", THRESHOLD, 40)  # every pair drawn
    assert titles == ["6 duplicate pair(s), different labels first (d = 1 - pixel correlation)"]


def test_two_small_integer_features_are_a_table_too() -> None:
    """uint8 (N, 2): 3,168 false pairs at distance 0 among 300 random rows, as for floats."""
    x = np.random.default_rng(0).integers(0, 256, (300, 2), dtype=np.uint8)
    x[7] = x[3]
    table = find_pairs(torch.from_numpy(x[:, :, None, None]))
    assert table.iloc[0].tolist() == [3, 7, 0.0, False, False]
    assert 1 <= len(table) <= 5 and (table["distance"].iloc[1:] > 0).all()
    assert _pairs(table) == _pairs(find_pairs(_table(x.astype(np.float32))))
