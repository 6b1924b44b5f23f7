"""Injected noise and duplicates are the ground truth of the detection tasks: check them exactly."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from harness.corruption import (
    default_duplicate_pairs,
    inject_duplicates,
    read_label_file,
    symmetric_noise,
)
from harness.errors import HarnessError


def _labels(n: int = 1000, num_classes: int = 10, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, size=n)


# --- symmetric noise -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.02, 0.05, 0.1, 0.333])
def test_symmetric_noise_changes_exactly_round_rate_n(rate: float) -> None:
    y = _labels(1003)
    noisy, mask = symmetric_noise(y, 10, rate, seed=0)
    assert mask.dtype == bool and mask.shape == y.shape
    assert mask.sum() == round(rate * len(y))
    assert np.all(noisy[mask] != y[mask])
    assert np.array_equal(noisy[~mask], y[~mask])
    assert noisy.min() >= 0 and noisy.max() < 10


def test_symmetric_noise_leaves_input_untouched() -> None:
    y = _labels()
    before = y.copy()
    noisy, _ = symmetric_noise(y, 10, 0.5, seed=1)
    assert np.array_equal(y, before)
    assert noisy is not y


def test_symmetric_noise_is_seeded() -> None:
    y = _labels()
    a = symmetric_noise(y, 10, 0.1, seed=7)
    b = symmetric_noise(y, 10, 0.1, seed=7)
    c = symmetric_noise(y, 10, 0.1, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_symmetric_noise_new_labels_cover_all_other_classes() -> None:
    # Uniform over the *other* classes: with 3 classes and many flips, both alternatives occur,
    # in roughly equal numbers.
    y = np.zeros(3000, dtype=np.int64)
    noisy, mask = symmetric_noise(y, 3, 0.9, seed=0)
    counts = np.bincount(noisy[mask], minlength=3)
    assert counts[0] == 0
    assert abs(counts[1] - counts[2]) < 0.1 * mask.sum()


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_symmetric_noise_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(HarnessError, match="rate"):
        symmetric_noise(_labels(), 10, rate, seed=0)


def test_symmetric_noise_rejects_out_of_range_labels() -> None:
    with pytest.raises(HarnessError, match=r"\[0, 5\)"):
        symmetric_noise(np.array([0, 1, 7]), 5, 0.1, seed=0)


# --- duplicates ------------------------------------------------------------------------------


def test_default_duplicate_pairs_scales_to_half_a_percent() -> None:
    assert default_duplicate_pairs(50_000) == 250
    assert default_duplicate_pairs(1437) == 7
    assert default_duplicate_pairs(10) == 1


def _unique_images(n: int) -> np.ndarray:
    # Distinct images (the index is encoded in the pixels), so equal images reveal the pairs.
    x = np.zeros((n, 1, 4, 4), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256
    x[:, 0, 0, 1] = np.arange(n) // 256
    return x


def test_inject_duplicates_pairs_are_copies_with_conflicting_labels() -> None:
    n, pairs = 500, 20
    x, y = _unique_images(n), _labels(n)
    x_before, y_before = x.copy(), y.copy()
    new_x, new_y, pos = inject_duplicates(x, y, 10, pairs, seed=3)

    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)  # inputs untouched
    assert pos.dtype == bool and pos.sum() == 2 * pairs
    # Unchanged outside the positives.
    assert np.array_equal(new_x[~pos], x[~pos]) and np.array_equal(new_y[~pos], y[~pos])
    # Group the positives by image content: each group must be exactly one pair (disjoint pairs).
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i in np.flatnonzero(pos):
        groups[new_x[i].tobytes()].append(int(i))
    assert len(groups) == pairs
    for members in groups.values():
        assert len(members) == 2
        i, j = members
        assert new_y[i] != new_y[j]
        # One slot kept its own image and label (b), the other (a) got b's image.
        kept = [k for k in members if np.array_equal(new_x[k], x[k])]
        assert len(kept) == 1
        b = kept[0]
        assert new_y[b] == y[b]
    # No positive image appears anywhere outside its pair.
    outside = {new_x[i].tobytes() for i in np.flatnonzero(~pos)}
    assert not outside & set(groups)


def test_inject_duplicates_is_seeded() -> None:
    x, y = _unique_images(300), _labels(300)
    a = inject_duplicates(x, y, 10, 5, seed=1)
    b = inject_duplicates(x, y, 10, 5, seed=1)
    c = inject_duplicates(x, y, 10, 5, seed=2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("pairs", [0, -1, 6])
def test_inject_duplicates_rejects_bad_pair_count(pairs: int) -> None:
    with pytest.raises(HarnessError, match="pairs"):
        inject_duplicates(_unique_images(11), _labels(11), 10, pairs, seed=0)


def test_inject_duplicates_accepts_exactly_half() -> None:
    _, _, pos = inject_duplicates(_unique_images(10), _labels(10), 10, 5, seed=0)
    assert pos.all()


# --- label files -----------------------------------------------------------------------------


def test_read_label_file_npy_and_npz(tmp_path: Path) -> None:
    y = _labels(50)
    np.save(tmp_path / "a.npy", y)
    np.savez(tmp_path / "one.npz", noisy=y)
    np.savez(tmp_path / "two.npz", clean=y, noisy=(y + 1) % 10)
    assert np.array_equal(read_label_file(str(tmp_path / "a.npy"), 50, 10), y)
    assert np.array_equal(read_label_file(str(tmp_path / "one.npz"), 50, 10), y)
    got = read_label_file(f"{tmp_path / 'two.npz'}:noisy", 50, 10)
    assert got.dtype == np.int64 and np.array_equal(got, (y + 1) % 10)


def test_read_label_file_accepts_integer_valued_floats(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.array([0.0, 2.0, 1.0]))
    assert read_label_file(str(tmp_path / "f.npy"), 3, 3).tolist() == [0, 2, 1]


def test_read_label_file_wrong_length_names_both(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _labels(40))
    with pytest.raises(HarnessError, match=r"length 40.*50 samples"):
        read_label_file(str(tmp_path / "a.npy"), 50, 10)


def test_read_label_file_missing_key_lists_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", clean=_labels(5), noisy=_labels(5))
    with pytest.raises(HarnessError, match=r"no array 'human'.*clean, noisy"):
        read_label_file(f"{tmp_path / 'two.npz'}:human", 5, 10)


def test_read_label_file_ambiguous_npz_lists_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", clean=_labels(5), noisy=_labels(5))
    with pytest.raises(HarnessError, match=r"clean, noisy.*:KEY"):
        read_label_file(str(tmp_path / "two.npz"), 5, 10)


def test_read_label_file_out_of_range(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.array([0, 1, 10, 3, -1]))
    with pytest.raises(HarnessError, match=r"\[0, 10\).*2 are not.*index 2 has 10"):
        read_label_file(str(tmp_path / "a.npy"), 5, 10)


def test_read_label_file_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        read_label_file(str(tmp_path / "nope.npy"), 5, 10)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((5, 2), dtype=np.int64), "1-D"),
        (np.array([0.5, 1, 2, 3, 4]), "non-integer"),
        (np.array([True, False, True, False, True]), "integer class ids"),
    ],
)
def test_read_label_file_rejects_non_label_arrays(
    tmp_path: Path, array: np.ndarray, message: str
) -> None:
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(HarnessError, match=message):
        read_label_file(str(tmp_path / "a.npy"), 5, 10)


def test_read_label_file_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"\.npy or \.npz"):
        read_label_file(str(tmp_path / "labels.csv"), 5, 10)


def test_a_label_file_replaced_after_planning_is_refused_not_stored(make_config, digits, tmp_path: Path) -> None:
    # the run's address holds the planned file's hash: training on a replaced file under it would
    # store wrong labels for good (and score them against the old ones); the run fails instead
    from harness.experiment import Experiment
    from harness.store import RunStore

    y = digits.y_train.numpy()
    path = tmp_path / "noisy.npy"
    planned = y.copy()
    planned[:30] = (planned[:30] + 1) % 10
    np.save(path, planned)
    exp = Experiment(make_config(noisy_labels=str(path), noise_rates=(), epochs=1, executor="local", workers=1))
    (_, _, base), = exp.plan.settings
    replaced = y.copy()
    replaced[100:130] = (replaced[100:130] + 1) % 10
    np.save(path, replaced)
    result = exp.run()
    assert any("changed while the experiment ran" in f for f in result.failures), result.failures
    assert RunStore(exp.cfg.store).get(base) is None
    with pytest.raises(HarnessError, match="changed while the experiment ran"):
        read_label_file(str(path), len(y), 10, expected_sha=base.data.corruption.label_file_sha)
    assert read_label_file(str(path), len(y), 10).tolist() == replaced.tolist()  # no hash asked: read as is
