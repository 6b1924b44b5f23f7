"""Loaders for published reference files: correct values, and loud failures on misalignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baselines.references import Reference, load_cscore, load_fz
from harness.errors import HarnessError

LABELS = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64)
VALUES = np.linspace(0.0, 0.7, len(LABELS))


def _fz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "infl.npz"
    np.savez(path, **arrays)
    return path


def test_load_fz(tmp_path: Path) -> None:
    ref = load_fz(_fz(tmp_path, tr_mem=VALUES, tr_labels=LABELS), LABELS)
    assert isinstance(ref, Reference)
    assert ref.name == "fz" and ref.stderr is None
    np.testing.assert_array_equal(ref.scores, VALUES)


def test_load_cscore_is_one_minus_score(tmp_path: Path) -> None:
    path = tmp_path / "cscores.npz"
    np.savez(path, scores=VALUES, labels=LABELS)
    ref = load_cscore(path, LABELS)
    assert ref.name == "cscore"
    np.testing.assert_allclose(ref.scores, 1.0 - VALUES)


def test_subset_uses_prefix(tmp_path: Path) -> None:
    ref = load_fz(_fz(tmp_path, tr_mem=VALUES, tr_labels=LABELS), LABELS[:5])
    np.testing.assert_array_equal(ref.scores, VALUES[:5])


def test_prefix_only_of_a_file_of_the_full_training_size(tmp_path: Path) -> None:
    # --subset 5 of an 8-sample training set: the 8-entry file's prefix; a 9-entry file is another
    # dataset's even when its first labels agree (they do here: LABELS + one more)
    path = _fz(tmp_path, tr_mem=VALUES, tr_labels=LABELS)
    np.testing.assert_array_equal(load_fz(path, LABELS[:5], full_size=8).scores, VALUES[:5])
    longer = _fz(tmp_path, tr_mem=np.r_[VALUES, 0.5], tr_labels=np.r_[LABELS, 0])
    with pytest.raises(HarnessError, match="file has 9 samples but the dataset's training set has 8"):
        load_fz(longer, LABELS[:5], full_size=8)
    with pytest.raises(HarnessError, match="file has 9 samples"):
        np.savez(tmp_path / "cs.npz", scores=np.r_[VALUES, 0.5], labels=np.r_[LABELS, 0])
        load_cscore(tmp_path / "cs.npz", LABELS, full_size=8)


def test_dataset_longer_than_file(tmp_path: Path) -> None:
    path = _fz(tmp_path, tr_mem=VALUES[:5], tr_labels=LABELS[:5])
    with pytest.raises(HarnessError, match=r"5.*8|8.*5"):
        load_fz(path, LABELS)


def test_differing_labels_are_counted(tmp_path: Path) -> None:
    wrong = LABELS.copy()
    wrong[[0, 2, 7]] = 0
    path = _fz(tmp_path, tr_mem=VALUES, tr_labels=wrong)
    with pytest.raises(HarnessError, match=r"3 of 8.*original training order"):
        load_fz(path, LABELS)


def test_differing_labels_in_subset_prefix(tmp_path: Path) -> None:
    wrong = LABELS.copy()
    wrong[1] = 7
    path = _fz(tmp_path, tr_mem=VALUES, tr_labels=wrong)
    with pytest.raises(HarnessError, match=r"1 of 4"):
        load_fz(path, LABELS[:4])
    # a difference beyond the prefix does not matter
    wrong = LABELS.copy()
    wrong[6] = 0
    load_fz(_fz(tmp_path, tr_mem=VALUES, tr_labels=wrong), LABELS[:4])


def test_missing_key_lists_keys_present(tmp_path: Path) -> None:
    path = tmp_path / "cscores.npz"
    np.savez(path, score=VALUES, labels=LABELS)
    expected = r"missing key.*'scores'.*keys present.*'score', 'labels'"
    with pytest.raises(HarnessError, match=expected):
        load_cscore(path, LABELS)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not found"):
        load_fz(tmp_path / "nope.npz", LABELS)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(HarnessError):
        load_fz(path, LABELS)


def test_a_reference_path_starting_with_tilde_is_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    """`--reference fz:~/infl.npz` reads $HOME/infl.npz, as the shell would for a path of its own."""
    from harness.tasks.reference import reference_config

    monkeypatch.setenv("HOME", str(tmp_path))
    _fz(tmp_path, tr_mem=VALUES, tr_labels=LABELS)
    config = reference_config("fz:~/infl.npz", {})
    assert config.path == str(tmp_path / "infl.npz") and config.label() == "fz:infl.npz"
    np.testing.assert_array_equal(config.load_file(LABELS).scores, VALUES)
