"""Two refusals that named the problem but not the fix (seen in a docs walkthrough): a label file
made for another dataset, and a reference file that is not there. Both stop before training."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_bad_input import DROP, argv, assert_refused, no_training  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("no_training")


def test_label_file_of_another_dataset_names_dataset_and_subset(tmp_path, capsys) -> None:
    """CIFAR-10N's 50,000 labels run without --dataset train on digits: the message said only
    '(check --subset)', while the usual cause is the missing --dataset."""
    path = tmp_path / "inputs" / "cifar10n.npy"
    path.parent.mkdir()
    np.save(path, np.zeros(50_000, dtype=np.int64))
    args = argv(tmp_path, {"--noise-rates": DROP}, ("--noisy-labels", str(path)))
    assert_refused(tmp_path, capsys, args, "have length 50000 but the whole training set has 1437 samples; the file "
                   "must hold one label per training sample in canonical order, all 1437 of them even with --subset "
                   "(its first N are used); pass the --dataset it was made for (the default is the embedded digits)")


def test_label_file_of_a_subset_says_the_whole_training_set_is_needed(tmp_path, capsys) -> None:
    """A file of --subset's 300 labels was told to 'pass ... the same --subset', which it had: the
    file must hold the whole training set's labels whatever --subset is."""
    path = tmp_path / "inputs" / "mine.npy"
    path.parent.mkdir()
    np.save(path, np.zeros(300, dtype=np.int64))
    args = argv(tmp_path, {"--noise-rates": DROP}, ("--noisy-labels", str(path), "--subset", "300"))
    assert_refused(tmp_path, capsys, args, "have length 300 but the whole training set has 1437 samples; the file "
                   "must hold one label per training sample in canonical order, all 1437 of them even with --subset")


def test_missing_reference_file_says_what_to_pass(tmp_path, capsys) -> None:
    missing = tmp_path / "inputs" / "fz_scores.npz"
    args = argv(tmp_path, {"--tasks": "memorization", "--noise-rates": DROP}, ("--reference", f"fz:{missing}"))
    assert_refused(tmp_path, capsys, args, f"reference file not found: {missing}; pass the path of an existing "
                   ".npz (--reference fz:PATH or cscore:PATH")
