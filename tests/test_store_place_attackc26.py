"""False alarms of the nested-store refusal (24b5364, cc66dfd): a path written with `..` that leads
beside a store, and a project folder holding another tool's runs/ and locks/ among its own files,
are no place inside a run store."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.store_place import check_place, store_above


def _store(root: Path) -> Path:
    for sub in ("runs", "partial", "locks"):
        (root / sub).mkdir(parents=True)
    return root


def test_a_path_through_dot_dot_beside_a_store_is_a_new_store_of_its_own(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    check_place(store / ".." / "sibling")  # it was 'is ../sibling/ of the run store .../store'
    check_place(store / "runs" / ".." / ".." / "other")
    assert store_above(store / ".." / "sibling") is None


def test_a_project_with_another_tools_runs_and_locks_is_no_run_store(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "runs" / "Dec05_04-36-12_host").mkdir(parents=True)  # TensorBoard's
    (project / "locks").mkdir()
    (project / "train.py").write_text("print('hi')\n")
    check_place(project / "memprox_store")
    assert store_above(project / "memprox_store") is None


def test_inside_a_store_is_still_refused_and_named_through_a_link(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    (store / ".probe").write_text("")  # hidden entries do not make it another tool's folder
    (tmp_path / "link").symlink_to(store / "partial")
    with pytest.raises(HarnessError, match=r"is partial/new/ of the run store .*store: "):
        check_place(tmp_path / "link" / "new")
    assert store_above(store / "partial" / "x") == (store.resolve(), Path("partial/x"))


def test_inside_a_store_whose_runs_is_a_link_to_another_disk_is_still_refused(tmp_path: Path) -> None:
    disk = tmp_path / "disk" / "runs"
    disk.mkdir(parents=True)
    store = tmp_path / "store"
    (store / "partial").mkdir(parents=True)
    (store / "runs").symlink_to(disk)
    with pytest.raises(HarnessError, match=r"is runs/x/ of the run store .*store: "):
        check_place(store / "runs" / "x")


def test_store_info_given_a_sibling_through_dot_dot_says_it_holds_no_store(tmp_path: Path, capsys) -> None:
    store = _store(tmp_path / "store")
    (tmp_path / "sibling").mkdir()
    assert main(["store", "info", "--store", str(store / ".." / "sibling")]) == 2
    err = capsys.readouterr().err
    assert "holds no run store (no runs/ folder)" in err and "of the run store" not in err


def test_ctrl_c_in_a_dry_run_prune_says_nothing_was_changed(tmp_path: Path, monkeypatch, capsys) -> None:
    """9e9a115 gave `store prune --dry-run` prune's line, "what was removed is gone whole": it removes nothing."""
    import harness.store_report as store_report

    def interrupted(root: Path) -> None:
        raise KeyboardInterrupt

    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(store_report, "scan", interrupted)
    assert main(["store", "prune", "--all", "--dry-run", "--store", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted; nothing was changed\n"
