"""Audit of the memorization reference and the privacy task's inputs: score files whose values
or types cannot be a reference fail by name before anything trains, and φ from stored
probabilities stays finite when a model is confidently wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from baselines.privacy import PHI_CAP, fit_gaussians, phi_from_probs, vulnerability
from baselines.references import load_cscore, load_fz
from harness.errors import HarnessError
from harness.experiment import Experiment

LABELS = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64)
VALUES = np.linspace(0.0, 0.7, len(LABELS))


def _npz(tmp_path: Path, name: str = "r.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_score_is_an_error_naming_count_and_index(tmp_path: Path, bad: float) -> None:
    """Before: a NaN was silently dropped from every metric, an inf made them NaN (exit 0)."""
    scores = VALUES.copy()
    scores[[2, 5]] = bad
    with pytest.raises(HarnessError, match=r"2 of the 8 scores used are NaN or infinite \(first at index 2, 5\)"):
        load_fz(_npz(tmp_path, tr_mem=scores, tr_labels=LABELS), LABELS)
    path = _npz(tmp_path, "c.npz", scores=scores, labels=LABELS)
    with pytest.raises(HarnessError, match="NaN or infinite"):
        load_cscore(path, LABELS)
    # only the entries in use count, as for the labels: --subset 2 of this file is fine
    np.testing.assert_array_equal(load_fz(_npz(tmp_path, tr_mem=scores, tr_labels=LABELS), LABELS[:2]).scores,
                                  VALUES[:2])


@pytest.mark.parametrize(("scores", "labels", "match"), [
    (np.array(["a"] * 8), LABELS, r"scores must be real numbers, got dtype <U1"),
    (VALUES + 1j, LABELS, r"scores must be real numbers, got dtype complex128"),
    (np.arange(8).astype("datetime64[D]"), LABELS, r"scores must be real numbers, got dtype datetime64"),
    (VALUES, LABELS.astype(str), r"labels must be integer class indices, got dtype <U"),
    (VALUES, LABELS + 0.5, r"labels must be integer class indices, got dtype float64 with non-integer values"),
])
def test_wrong_dtypes_are_errors(tmp_path: Path, scores: np.ndarray, labels: np.ndarray, match: str) -> None:
    """Before: strings escaped as a bare ValueError, complex values lost their imaginary part and
    dates counted as days, with exit 0."""
    with pytest.raises(HarnessError, match=match):
        load_fz(_npz(tmp_path, tr_mem=scores, tr_labels=labels), LABELS)


def test_whole_float_labels_and_bool_scores_are_accepted(tmp_path: Path) -> None:
    ref = load_fz(_npz(tmp_path, tr_mem=VALUES > 0.3, tr_labels=LABELS.astype(np.float64)), LABELS)
    np.testing.assert_array_equal(ref.scores, (VALUES > 0.3).astype(float))


def test_npy_file_is_an_error_not_a_type_error(tmp_path: Path) -> None:
    """Before: np.load returned a bare array and `with` raised TypeError (a traceback)."""
    np.save(tmp_path / "mem.npy", VALUES)
    with pytest.raises(HarnessError, match=r"mem.npy: a single .npy array, not an .npz archive.*'tr_mem', 'tr_labels'"):
        load_fz(tmp_path / "mem.npy", LABELS)


def test_nan_in_reference_file_stops_planning(make_config, digits, tmp_path: Path) -> None:
    labels = digits.y_train.numpy()
    scores = np.linspace(0.0, 1.0, len(labels))
    scores[7] = np.nan
    path = _npz(tmp_path, "fz.npz", tr_mem=scores, tr_labels=labels)
    cfg = make_config(tasks=("memorization",), subset=100, reference=f"fz:{path}")
    with pytest.raises(HarnessError, match=r"1 of the 100 scores used are NaN or infinite \(first at index 7\)"):
        Experiment(cfg)
    assert not (cfg.store / "runs").exists() or not any((cfg.store / "runs").iterdir())


def test_phi_from_probs_floors_an_underflowed_label_probability() -> None:
    """A model so confidently wrong that p_y underflowed float32 gives φ = −PHI_CAP (an upper
    bound of the true, more negative value), not −inf: before, the privacy task stopped with
    "eval pass is damaged" on such a run. NaN (a sample never evaluated) stays NaN."""
    probs = np.array([[1.0, 0.0, 0.0], [0.2, 0.7, 0.1], [np.nan] * 3], dtype=np.float32)
    phi = phi_from_probs(probs, np.array([1, 1, 0]))
    assert phi[0] == -PHI_CAP
    assert phi[1] == pytest.approx(np.log(0.7) - np.log(0.3), rel=1e-6)
    assert np.isnan(phi[2])
    # and such a φ enters the fit: model 0 (confidently wrong, out) vs two in-models at φ = 5
    column = np.array([phi[0], 5.0, 5.0, 4.0])
    members = np.array([False, True, True, False])
    fit = fit_gaussians(column[:, None], members[:, None])
    assert fit.mu_out[0] == pytest.approx((-PHI_CAP + 4.0) / 2)
    sd_out = np.std([-PHI_CAP, 4.0], ddof=1)
    want = stats.norm.cdf((5.0 - fit.mu_out[0]) / np.sqrt(0.1**2 + sd_out**2))
    assert vulnerability(column[:, None], members[:, None])[0] == pytest.approx(want)


def test_a_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    """Before: "reference file not found" for a path that exists (a folder)."""
    with pytest.raises(HarnessError, match="is a folder; pass the .npz file itself"):
        load_fz(tmp_path, LABELS)
