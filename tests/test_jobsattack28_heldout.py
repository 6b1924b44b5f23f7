"""The CLI's held-out accuracy line says on how many test samples it was measured (jobsattack28).

A run on a subset is scored on max(1,000, subset) of the test split (`harness.datasets.base._test_count`):
the quick preset's CIFAR-10 runs on 4,000 of its 10,000 test images. The line said "on the test split",
as if all of it. And a manifest holding `test_acc: null` passes `Manifest.from_dict`: the line's sum
raised TypeError after the experiment had finished (exit 1, no leaderboard). Values are checked against
summary.json's own `test_acc` and the npz file's own test split size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.cli import main
from harness.manifest import DIGEST_FIELD, manifest_digest


def _heldout(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("held-out accuracy of the base runs")]


def _npz(tmp_path: Path) -> Path:
    """1,500 test samples: a subset of 200 is scored on 1,000 of them."""
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(400, 6)).astype(np.float32), rng.normal(size=(1500, 6)).astype(np.float32)
    path = tmp_path / "t.npz"
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.int64), x_test=x_test, y_test=(x_test[:, 0] > 0).astype(np.int64))
    return path


def _args(dataset: str, tmp_path: Path, *more: str) -> list[str]:
    return ["run", "--no-progress", "--dataset", dataset, "--tasks", "mislabeled", "--noise-rates", "0.1",
            "--proxies", "csl", "--seeds", "2", "--epochs", "2", "--executor", "inprocess", "--bootstrap", "0",
            "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store"), *more]


def _test_accs(tmp_path: Path) -> list[float]:
    return [r["test_acc"] for r in json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]]


def test_a_subset_run_names_the_test_samples_it_was_scored_on(tmp_path: Path, capsys) -> None:
    assert main(_args(f"npz:{_npz(tmp_path)}", tmp_path, "--subset", "200")) == 0
    accs = _test_accs(tmp_path)
    assert len(accs) == 2
    assert _heldout(capsys.readouterr().err) == [
        "held-out accuracy of the base runs on 1,000 samples of the test split (a run on a subset is scored on "
        f"max(1,000, subset) of them): mean {sum(accs) / 2:.3f}, min {min(accs):.3f}"]


def test_the_whole_split_is_counted_without_a_subset(tmp_path: Path, capsys) -> None:
    assert main(_args(f"npz:{_npz(tmp_path)}", tmp_path)) == 0
    accs = _test_accs(tmp_path)
    assert _heldout(capsys.readouterr().err) == [
        f"held-out accuracy of the base runs on the test split (1,500 samples): mean {sum(accs) / 2:.3f}, "
        f"min {min(accs):.3f}"]


def _null_test_acc(manifest: Path) -> float:
    """The stored run's test_acc set to null, checksum recomputed: what `Manifest.from_dict` accepts."""
    raw = json.loads(manifest.read_text())
    raw.pop(DIGEST_FIELD)
    old, raw["test_acc"] = raw["test_acc"], None
    manifest.write_text(json.dumps({**raw, DIGEST_FIELD: manifest_digest(raw)}, indent=1, sort_keys=True))
    return old


def test_a_stored_run_whose_test_acc_is_null_is_left_out_of_the_line(tmp_path: Path, capsys) -> None:
    args = _args("digits", tmp_path, "--overwrite")
    assert main(args) == 0
    capsys.readouterr()
    manifests = sorted((tmp_path / "store").rglob("manifest.json"))
    assert len(manifests) == 2
    kept = {_null_test_acc(manifests[0])} ^ set(_test_accs(tmp_path))
    assert main(args) == 0  # the report raised TypeError here: exit 1 after the outputs were written
    (acc,) = kept
    assert _heldout(capsys.readouterr().err) == [
        f"held-out accuracy of the base runs on the test split (360 samples): mean {acc:.3f}, min {acc:.3f}"]
