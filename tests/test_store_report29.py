"""`memprox store` on what is not quite a store: a dry run that must refuse as the real prune does, an entry kept
for a user's file whose manifest does not parse, and a project's TensorBoard runs/ (files29's findings)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

RUN = ["run", "--no-progress", "--dataset", "digits", "--seeds", "1", "--noise-rates", "0.1", "--tasks", "mislabeled",
       "--epochs", "2", "--proxies", "final_loss", "--executor", "inprocess", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store29")
    assert main([*RUN, "--store", str(root / "store"), "--out", str(root / "out")]) == 0
    return root / "store"


def _copy(store: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(store, tmp_path / "store", symlinks=True)
    return tmp_path / "store"


def test_a_dry_run_refuses_a_store_it_could_not_prune(trained, tmp_path, monkeypatch, capsys) -> None:
    """`--dry-run` skipped the write check: "would remove 1" on a store the real prune refuses (exit 2)."""
    store = _copy(trained, tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).parent == store else real_access(p, mode))
    capsys.readouterr()
    assert main(["store", "prune", "--all", "--dry-run", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"run store folder {store / 'runs'} is not writable" in err and "would remove" not in err
    assert len(list((store / "runs").iterdir())) == 1 and not (store / "locks" / "probe").exists()
    monkeypatch.undo()
    assert main(["store", "prune", "--all", "--dry-run", "--store", str(store)]) == 0
    assert "would remove 1" in capsys.readouterr().out


def test_an_entry_whose_manifest_does_not_parse_is_said_kept(trained, tmp_path, capsys) -> None:
    """Kept for the user's file in it, but said nothing: "removed 0 of 0" alone."""
    store = _copy(trained, tmp_path)
    (entry,) = (store / "runs").iterdir()
    (entry / "manifest.json").write_text("garbage{")
    np.save(entry / "my_analysis.npy", np.arange(5))
    capsys.readouterr()
    assert main(["store", "prune", "--damaged", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"kept runs/{entry.name}" in out and "files that are not the store's own" in out
    assert np.array_equal(np.load(entry / "my_analysis.npy"), np.arange(5))


def test_a_folder_named_as_an_entry_without_a_manifest_still_gets_no_line(trained, tmp_path, capsys) -> None:
    store = _copy(trained, tmp_path)
    (entry,) = (store / "runs").iterdir()
    (entry / "manifest.json").unlink()
    (entry / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["store", "prune", "--damaged", "--store", str(store)]) == 0
    assert "kept runs/" not in capsys.readouterr().out and (entry / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", [["info"], ["prune", "--all"], ["prune", "--all", "--dry-run"]])
def test_a_projects_tensorboard_runs_is_no_store_to_the_store_commands(tmp_path, capsys, command) -> None:
    """`store prune` made locks/ among the project's files (the run itself already refused such a --store)."""
    project = tmp_path / "proj"
    (project / "runs" / "Dec05_12-00-00_host").mkdir(parents=True)
    (project / "runs" / "Dec05_12-00-00_host" / "events.out.tfevents.1").write_bytes(b"tb")
    (project / "train.py").write_text("print('train')\n")
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    capsys.readouterr()
    assert main(["store", *command, "--store", str(project)]) == 2
    err = capsys.readouterr().err
    assert "holds a runs/ folder of another tool's" in err and "pass the --store your runs were trained into" in err
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before


def test_a_real_store_is_still_one(trained, capsys) -> None:
    capsys.readouterr()
    assert main(["store", "info", "--store", str(trained)]) == 0
    assert "1" in capsys.readouterr().out
