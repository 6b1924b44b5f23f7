"""Stability-based memorization estimator and the subset masks that feed it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from baselines.stability import stability_memorization, subset_masks
from harness.errors import HarnessError


def _loop_reference(correct: np.ndarray, trained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mem, se = [], []
    for i in range(correct.shape[1]):
        a, b = correct[trained[:, i], i], correct[~trained[:, i], i]
        va = a.var(ddof=1) if len(a) > 1 else np.nan
        vb = b.var(ddof=1) if len(b) > 1 else np.nan
        mem.append(a.mean() - b.mean())
        se.append(np.sqrt(va / len(a) + vb / len(b)))
    return np.array(mem), np.array(se)


def test_matches_direct_loop() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((12, 40))
    trained = rng.random((12, 40)) < 0.6
    trained[0], trained[1] = True, False  # every sample has n_in >= 1 and n_out >= 1
    trained[2, :5] = True  # some samples with n_out == 1 or n_in == 1 exercise ddof handling
    ref = stability_memorization(correct, trained)
    mem, se = _loop_reference(correct, trained)
    assert ref.name == "stability"
    np.testing.assert_allclose(ref.scores, mem, atol=1e-12)
    np.testing.assert_allclose(ref.stderr, se, atol=1e-12)


def test_a_single_model_group_leaves_the_stderr_unknown() -> None:
    """One in-model has no spread to measure: the estimate stands, its stderr is NaN (it was 0 for
    that group, i.e. sqrt(0.5 / 2) here, understating the error at small K)."""
    correct = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    trained = np.array([[True, True], [False, True], [False, False], [False, False]])
    ref = stability_memorization(correct, trained)
    np.testing.assert_allclose(ref.scores, [1 - 2 / 3, 1 - 0.5])
    assert np.isnan(ref.stderr[0])
    np.testing.assert_allclose(ref.stderr[1], np.sqrt(0.0 / 2 + 0.5 / 2))


def test_constructed_case() -> None:
    trained = subset_masks(n=6, k=20, fraction=0.5, seed=1)
    correct = np.ones_like(trained, dtype=bool)
    correct[:, 0] = trained[:, 0]  # sample 0 is right only when trained on
    ref = stability_memorization(correct, trained)
    np.testing.assert_allclose(ref.scores, [1, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(ref.stderr, 0.0)


def test_undefined_samples_are_nan_with_one_warning() -> None:
    trained = np.array([[True, True, False], [True, False, False]])
    correct = np.ones((2, 3))
    with pytest.warns(RuntimeWarning, match="2 of 3") as record:
        ref = stability_memorization(correct, trained)
    assert len(record) == 1
    assert np.isnan(ref.scores[[0, 2]]).all() and np.isnan(ref.stderr[[0, 2]]).all()
    assert ref.scores[1] == 0.0


def test_no_warning_when_all_defined() -> None:
    trained = np.array([[True, False], [False, True]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stability_memorization(np.ones((2, 2)), trained)


def test_shape_mismatch() -> None:
    with pytest.raises(HarnessError):
        stability_memorization(np.ones((2, 3)), np.ones((3, 2), dtype=bool))


def test_subset_masks_size_and_determinism() -> None:
    masks = subset_masks(n=101, k=7, fraction=0.7, seed=3)
    assert masks.shape == (7, 101) and masks.dtype == bool
    assert (masks.sum(axis=1) == round(0.7 * 101)).all()
    np.testing.assert_array_equal(masks, subset_masks(n=101, k=7, fraction=0.7, seed=3))
    assert not np.array_equal(masks, subset_masks(n=101, k=7, fraction=0.7, seed=4))
    assert len({row.tobytes() for row in masks}) == 7  # models get different subsets


def test_subset_masks_prefix_stable_when_k_grows() -> None:
    small = subset_masks(n=50, k=3, fraction=0.5, seed=9)
    large = subset_masks(n=50, k=10, fraction=0.5, seed=9)
    np.testing.assert_array_equal(large[:3], small)
    first = np.random.default_rng([9, 1]).permutation(50)[:25]
    assert set(np.flatnonzero(large[1])) == set(first)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_subset_masks_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(HarnessError, match="fraction"):
        subset_masks(n=10, k=2, fraction=fraction, seed=0)
