"""What a docs walkthrough on an image folder (CIFAR-10 images, planted mislabels and copies) found
unclear in the CLI's own lines: a `suspects.by` that is no proxy at all was told to be added to
--proxies; the start line counted each setting once per seed; `duplicates=exact` was announced as
"copies and near copies"."""

from __future__ import annotations

from pathlib import Path

from harness.cli import main


def test_a_by_that_is_no_proxy_says_so_instead_of_asking_to_add_it(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    code = main(["run", "--tasks", "suspects", "--proxies", "csl", "--task-arg", "suspects.by=nosuch",
                 "--store", str(store), "--out", str(tmp_path / "out"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "suspects.by=nosuch names no selected proxy; pass one of csl, nosuch is no proxy at all" in err
    assert "add nosuch to --proxies" not in err and not store.exists()


def test_the_start_line_counts_settings_and_seeds_apart_and_exact_copies_are_called_so(tmp_path: Path,
                                                                                          capsys) -> None:
    code = main(["run", "--dataset", "digits", "--subset", "200", "--tasks", "mislabeled,suspects", "--proxies",
                 "final_loss", "--noise-rates", "0.1,0.2", "--seeds", "0,1", "--epochs", "1", "--bootstrap", "0",
                 "--task-arg", "suspects.duplicates=exact", "--store", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out"), "--executor", "inprocess", "--no-progress"])
    assert code == 0
    out, err = capsys.readouterr()
    assert " · 3 settings × 2 seeds · " in err  # noise=0.1, noise=0.2, the suspects task's one
    assert "(exact copies among the training samples" in out and "near copies" not in out
