"""The CLI prints the base runs' held-out accuracy beside their training accuracy: a user who fixed labels
compares it between runs (docs/reading-results.md), and it was in summary.json only. Checked against
summary.json's own `test_acc`; a dataset without a test split prints no such line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.cli import main


def _heldout_line(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("held-out accuracy of the base runs")]


def _args(dataset: str, tmp_path: Path) -> list[str]:
    return ["run", "--no-progress", "--dataset", dataset, "--tasks", "mislabeled", "--noise-rates", "0.1",
            "--proxies", "csl", "--seeds", "2", "--epochs", "2", "--executor", "inprocess",
            "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")]


def test_the_mean_and_lowest_held_out_accuracy_of_the_base_runs_are_printed(tmp_path: Path, capsys) -> None:
    assert main(_args("digits", tmp_path)) == 0
    runs = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    accs = [r["test_acc"] for r in runs]  # the two noisy base runs: the only runs
    assert len(accs) == 2 and all(0.5 < a <= 1 for a in accs)
    assert _heldout_line(capsys.readouterr().err) == [
        f"held-out accuracy of the base runs on the test split (360 samples): mean {sum(accs) / 2:.3f}, "
        f"min {min(accs):.3f}"]  # digits' 360 test samples, all of them without --subset


def test_no_line_without_a_test_split(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    np.savez(tmp_path / "t.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    assert main(_args(f"npz:{tmp_path / 't.npz'}", tmp_path)) == 0
    err = capsys.readouterr().err
    assert "final training accuracy of the base runs" in err and _heldout_line(err) == []
