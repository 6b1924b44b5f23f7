"""`--data-root` with a dataset that never reads it (digits, npz:, imagefolder:, hf:) changed the experiment's
identity: the warning says "drop --data-root", and the rerun that did, or named another, was refused as
"results of another experiment" in its own --out. Such a --data-root is now hashed as not given; ids of
configs without it and of datasets that read it (torchvision's) are pinned at their old values."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ExperimentConfig, experiment_id


def _id(dataset: str, data_root: Path | None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return experiment_id(ExperimentConfig(dataset=dataset, data_root=data_root))


@pytest.mark.parametrize("dataset", ["digits", "npz:/data/x.npz", "imagefolder:/data/images", "hf:/data/texts"])
def test_an_unread_data_root_leaves_the_identity(dataset: str) -> None:
    plain = _id(dataset, None)
    assert _id(dataset, Path("/data/a")) == plain
    assert _id(dataset, Path("/data/b")) == plain


@pytest.mark.parametrize("dataset, data_root, identity", [
    ("cifar10", None, "ad73c7c5168d28e3"),
    ("cifar10", Path("/data/torchvision"), "142050f2b0bf111c"),
    ("mnist", Path("/data/tv2"), "83ba0c93240489d1"),
    ("digits", None, "0938f621bdc8e982"),
    ("npz:/data/x.npz", None, "74c8c9fb79dff39c"),
])
def test_other_identities_are_unchanged(dataset: str, data_root: Path | None, identity: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Values from the code before: a dataset that reads --data-root keeps it in its identity."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ids pinned on a machine without CUDA
    assert _id(dataset, data_root) == identity


def test_a_rerun_that_drops_the_data_root_reuses_its_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = ["run", "--dataset", "digits", "--proxies", "final_loss", "--tasks", "mislabeled", "--noise-rates", "0.1",
           "--seeds", "1", "--epochs", "1", "--subset", "300", "--bootstrap", "0", "--executor", "inprocess",
           "--no-progress", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*run, "--data-root", str(tmp_path / "a")]) == 0
        assert main([*run, "--data-root", str(tmp_path / "b")]) == 0
        assert main(run) == 0  # as the warning says: "drop --data-root"
    assert "another experiment" not in capsys.readouterr().err
    assert (tmp_path / "out" / "leaderboard.csv").is_file()
