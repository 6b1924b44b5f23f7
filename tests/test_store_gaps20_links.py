"""A store reached through a link: its root a link, or its runs/ a link to a folder on another disk
(a big store). Runs train into both; `store info` and `store prune` refused the second ("holds no run
store"). Both now read and prune it, and prune deletes only the entry files it checked: the links,
the folder they lead to and a user's file in it stay. A --store that is a file, or a runs/ that is a
dangling link, is one line saying which."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import harness.store_admin as admin
from harness.cli import main
from harness.errors import HarnessError
from harness.jobs import make_manifest
from harness.runspec import RunSpec
from harness.store import RunStore
from harness.training import RunOutput


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _put(store: RunStore, spec: RunSpec) -> None:
    arrays = {"train_loss": {"loss": np.random.default_rng(spec.seed).random((3, 5), dtype=np.float32)}}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1},
                    recorder_flops={"train_loss": 0}, train_acc=0.5, test_acc=0.5, history=[])
    store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))


@pytest.fixture
def specs(base_spec) -> list[RunSpec]:
    return [RunSpec(data=base_spec.data, model=base_spec.model, recipe=base_spec.recipe, seed=s) for s in (0, 1)]


def _linked_runs(tmp_path: Path, specs: list[RunSpec]) -> tuple[Path, Path]:
    """A store whose runs/ links to a folder elsewhere, with its runs trained through the link, a user's
    file beside them and a killed put's temporary folder; (store root, the folder runs/ leads to)."""
    disk = tmp_path / "bigdisk" / "memprox-runs"
    disk.mkdir(parents=True)
    root = tmp_path / "store"
    root.mkdir()
    (root / "runs").symlink_to(disk)
    store = RunStore(root)
    for spec in specs:
        _put(store, spec)
    (disk / "notes.txt").write_text("mine")
    left = disk / f".tmp-{specs[0].digest()}-deadbeef"
    left.mkdir()
    np.save(left / "train_loss.loss.npy", np.zeros(3))
    return root, disk


def test_info_and_prune_follow_a_runs_folder_that_is_a_link(tmp_path, specs, capsys) -> None:
    root, disk = _linked_runs(tmp_path, specs)
    code, out, err = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0, err
    assert "complete entries: 2," in out and f"runs/ is a link to {disk}" in out
    assert "leftovers of killed processes: 1," in out and "other files in runs/ and partial/" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--label-contains", "seed1")
    assert code == 0 and "removed 1 of 1 selected" in out
    assert sorted(p.name for p in disk.iterdir() if admin.DIGEST.fullmatch(p.name)) == [specs[0].digest()]
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and "removed 1 of 1 leftovers" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--all")
    assert code == 0 and "removed 1 of 1 selected" in out
    assert (root / "runs").is_symlink() and disk.is_dir() and sorted(p.name for p in disk.iterdir()) == ["notes.txt"]
    assert (disk / "notes.txt").read_text() == "mine"


def test_info_and_prune_through_a_store_root_that_is_a_link(tmp_path, specs, capsys) -> None:
    real = tmp_path / "disk" / "store"
    store = RunStore(real)
    for spec in specs:
        _put(store, spec)
    link = tmp_path / "store-link"
    link.symlink_to(real)
    code, out, _ = _cli(capsys, "store", "info", "--store", str(link))
    assert code == 0 and "complete entries: 2," in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(link), "--all")
    assert code == 0 and "removed 2 of 2 selected" in out
    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == ["locks", "partial", "runs"]
    assert list((real / "runs").iterdir()) == []


def test_a_store_path_that_is_a_file_or_a_runs_link_to_nothing_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "store"
    path.write_text("not a store")
    for command in (["info"], ["prune", "--all"]):
        code, out, err = _cli(capsys, "store", *command, "--store", str(path))
        assert code == 2 and out == "" and f"--store {path} is a file, not a folder" in err
        assert len(err.strip().splitlines()) == 1
    assert path.read_text() == "not a store"
    root = tmp_path / "linked"
    root.mkdir()
    (root / "runs").symlink_to(tmp_path / "unplugged-disk" / "runs")
    code, _, err = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 2 and f"runs/ that is a link to {tmp_path / 'unplugged-disk' / 'runs'}, which is no folder" in err


@pytest.mark.parametrize("kind", ["file", "root link to nothing", "runs link to nothing"])
def test_a_run_refuses_a_store_path_it_cannot_use_naming_why_and_makes_nothing(tmp_path, kind) -> None:
    """`run --store FILE` said `run store folder FILE/runs is not writable (Not a directory)`, and a store
    whose runs/ links to an unmounted disk `is a folder of other files (runs)`."""
    root = tmp_path / "store"
    if kind == "file":
        root.write_text("x")
    elif kind == "root link to nothing":
        root.symlink_to(tmp_path / "unmounted" / "store")
    else:
        root.mkdir()
        (root / "runs").symlink_to(tmp_path / "unmounted" / "runs")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(HarnessError) as refused:
        RunStore(root, create=False).check_writable()
    said = str(refused.value)
    assert {"file": f"--store {root} is a file, not a folder",
            "root link to nothing": f"--store {root} is a link to {tmp_path / 'unmounted' / 'store'}, which does not",
            "runs link to nothing": f"runs/ that is a link to {tmp_path / 'unmounted' / 'runs'}, which is no folder",
            }[kind] in said
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_store_folder_that_is_a_link_to_itself_is_one_line_not_a_traceback(tmp_path, capsys) -> None:
    """Naming where a link leads resolved it, which raises on a loop: `store info` on a store whose partial/
    is a link to itself ended in a RuntimeError traceback."""
    root = tmp_path / "store"
    (root / "runs").mkdir(parents=True)
    (root / "partial").symlink_to(root / "partial")
    code, out, _ = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0 and f"partial/ is a link to {root / 'partial'}: not walked into" in out
    code, _, err = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 2 and f"is a link (to {root / 'partial'})" in err
    (root / "runs").rmdir()
    (root / "runs").symlink_to(root / "runs")
    code, _, err = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 2 and f"runs/ that is a link to {root / 'runs'}, which is no folder" in err
    with pytest.raises(HarnessError, match="runs/ that is a link to .*, which is no folder"):
        RunStore(root, create=False).check_writable()
