"""`memprox store prune` attacked as an adversary would: what it must never remove (a user's files
planted in or beside entries, a folder partial/ links to, a file put into an entry while it is
removed) and what it must not claim (bytes a hard link keeps). Stores are made by `RunStore.put`
(no training), except the slow check that today's code writes no entry `--unreachable` selects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

import harness.store_admin as admin
import harness.store_scan as store_scan
from harness.cli import main
from harness.jobs import make_manifest
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore
from harness.training import RunOutput

REPO = Path(__file__).resolve().parents[1]


def _put(root: Path, seed: int) -> Path:
    """A complete entry of a tiny hand-made run; returns its folder."""
    spec = RunSpec(DataSpec("digits"), "mlp", Recipe(), seed=seed)
    arrays = {"train_loss": {"loss": np.full((3, 2), seed, np.float32)}}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1},
                    recorder_flops={"train_loss": 0}, train_acc=1.0, test_acc=1.0, history=[])
    return RunStore(root).put(spec, arrays, make_manifest(spec, out, "single", "cpu")).path


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    for seed in (0, 1):
        _put(root, seed)
    return root


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", b"x" * 100)


def test_a_partial_folder_that_links_elsewhere_is_never_walked_into(store, tmp_path, capsys) -> None:
    """partial/ linking to a user's folder: a zip there named `<hash>.pt` (a checkpoint of theirs), or
    named after a stored entry, was removed by --partial and --leftovers."""
    home = tmp_path / "home"
    home.mkdir()
    digest = next(p.name for p in (store / "runs").iterdir())
    _zip(home / ("0123456789abcdef0123.pt"))
    (home / f"{digest}.pt").write_text("mine")
    (store / "partial").rmdir()
    (store / "partial").symlink_to(home)
    for flag in ("--partial", "--leftovers"):
        code, out, err = _cli(capsys, "store", "prune", "--store", str(store), flag)
        assert code == 2 and out == "" and "is a link" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in home.iterdir()) == ["0123456789abcdef0123.pt", f"{digest}.pt"]
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert code == 0 and "partial/ is a link to" in out and "partial checkpoints: 0, 0 bytes" in out
    assert "leftovers of killed processes: 0, 0 bytes" in out


def test_every_runs_cleanup_never_walks_into_a_linked_partial_folder(store, tmp_path) -> None:
    """`RunStore.clean` (run by every experiment, and by `prune --leftovers`) removed a user's
    `<digest>.pt` and temp-named files from the folder a linked partial/ points to."""
    home = tmp_path / "home"
    home.mkdir()
    digest = next(p.name for p in (store / "runs").iterdir())
    mine = [f"{digest}.pt", f".{digest}.pt.part", f"{digest}.tmp7"]
    for name in mine:
        (home / name).write_text("mine")
    (store / "partial").rmdir()
    (store / "partial").symlink_to(home)
    assert RunStore(store).clean() == []
    assert sorted(p.name for p in home.iterdir()) == sorted(mine)


def test_a_users_npy_put_into_an_entry_keeps_the_entry_whole(store, capsys) -> None:
    """Only the arrays an entry's manifest names are the store's: a `.npy` of the user's beside them
    made the entry (and the user's file) go with --all."""
    entry = next((store / "runs").iterdir())
    np.save(entry / "my_scores.npy", np.arange(3))
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all")
    assert code == 0 and "removed 1 of 1 selected" in out and f"removed runs/{entry.name}" not in out
    assert f"kept runs/{entry.name}  " in out  # and said so (test_store_admin9)
    assert np.load(entry / "my_scores.npy").tolist() == [0, 1, 2]
    assert admin.read_entry(entry).status == "complete"


def test_a_digest_named_folder_without_a_manifest_is_not_the_stores_own(store, capsys) -> None:
    """The store never leaves an entry without its manifest.json: a folder named as one holding only
    a user's `.npy` files (or nothing) read as a damaged entry of the store's and went with --damaged."""
    users = store / "runs" / ("ab" * 10)
    users.mkdir()
    np.save(users / "features.npy", np.ones(4))
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert "damaged entries: 1" in out and "not the store's own (never pruned): 1" in out
    for flag in ("--damaged", "--all"):
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), flag)
        assert code == 0 and users.name not in out
    assert np.load(users / "features.npy").tolist() == [1.0] * 4


def test_a_file_put_in_an_entry_after_its_last_check_is_not_deleted(store, monkeypatch) -> None:
    """Between the check of the renamed-aside folder and its deletion, a file put in was deleted
    with it (the whole folder went): now only the files checked are, and the rest stays."""
    entry = next((store / "runs").iterdir())
    name = "own_files" if hasattr(admin, "own_files") else "own_entry_folder"
    real = getattr(admin, name)

    def check_then_plant(path: Path, *a):
        found = real(path, *a)
        if path.name.startswith(".tmp-"):
            (path / "late.npy").write_bytes(b"mine")
        return found

    monkeypatch.setattr(admin, name, check_then_plant)
    freed, why = admin.remove_entry(store, entry.name, admin.Selection(everything=True), admin.datetime.now())
    assert freed is None and why.startswith("set aside as runs/.tmp-")
    (aside,) = (store / "runs").glob(f".tmp-{entry.name}-prune*")
    assert [p.name for p in aside.iterdir()] == ["late.npy"] and (aside / "late.npy").read_bytes() == b"mine"
    assert not entry.exists()


def test_an_entry_swapped_for_a_link_after_its_check_is_put_back_and_nothing_followed(store, tmp_path,
                                                                                  monkeypatch) -> None:
    """Deleting the checked file names inside a link swapped in for the entry would delete the
    files it points to (the user's, named alike): a link is put back, never walked into."""
    entry = next((store / "runs").iterdir())
    elsewhere = tmp_path / "elsewhere"
    real = admin.read_entry

    def read_then_swap(path: Path) -> admin.Entry:
        found = real(path)
        os.rename(path, elsewhere)
        path.symlink_to(elsewhere)
        return found

    monkeypatch.setattr(admin, "read_entry", read_then_swap)
    freed, why = admin.remove_entry(store, entry.name, admin.Selection(everything=True), admin.datetime.now())
    assert freed is None and why == "holds files that are not the store's own"
    assert entry.is_symlink() and sorted(p.name for p in elsewhere.iterdir()) == ["manifest.json",
                                                                                 "train_loss.loss.npy"]


def test_an_entry_this_process_may_not_read_is_never_selected(store, capsys, monkeypatch) -> None:
    """Permissions (as root, simulated): neither damaged nor anyone's files, just unreadable to us."""
    entry = sorted((store / "runs").iterdir())[0]
    real = admin.verify_entry

    def denied(path: Path, digest: str):
        if path == entry:
            raise PermissionError(13, "Permission denied", str(path / "manifest.json"))
        return real(path, digest)

    monkeypatch.setattr(store_scan, "verify_entry", denied)  # where read_entry looks it up
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert "unreadable entries: 1" in out and "not the store's own" not in out
    for flag in ("--damaged", "--all"):
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), flag)
        assert code == 0 and f"removed runs/{entry.name}" not in out  # never selected; said as kept
        assert f"kept 1 entry you cannot read (runs/{entry.name}: Permission denied)" in out
    assert entry.is_dir() and len(list(entry.iterdir())) == 2


def test_bytes_freed_leave_out_files_a_hard_link_keeps(store, tmp_path, capsys) -> None:
    """A store backed up with `cp -al` frees nothing when pruned: the dry run and the prune said it
    freed every entry's size."""
    backup = tmp_path / "backup"
    backup.mkdir()
    entries = sorted((store / "runs").iterdir())
    for i, f in enumerate(sorted(entries[0].iterdir())):
        os.link(f, backup / f"{i}-{f.name}")
    other = sum(f.stat().st_size for f in entries[1].iterdir())
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all", "--dry-run")
    assert code == 0 and f"would remove 2, freeing {other} bytes" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all")
    assert code == 0 and f"removed runs/{entries[0].name}  digits clean mlp seed" in out and "  0 bytes\n" in out
    assert f"removed 2 of 2 selected, freed {other} bytes" in out
    assert len(list(backup.iterdir())) == 2 and not any(e.exists() for e in entries)


def test_a_checkpoint_hard_linked_elsewhere_frees_nothing(store, tmp_path, capsys) -> None:
    ckpt = store / "partial" / ("1" * 20 + ".pt")
    _zip(ckpt)
    os.link(ckpt, tmp_path / "kept.pt")
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--partial")
    assert code == 0 and "removed 1 of 1 selected, freed 0 bytes" in out and (tmp_path / "kept.pt").is_file()


def test_prune_leftovers_says_what_it_put_back_and_what_it_skipped(store, capsys) -> None:
    """An entry a kill left set aside mid-swap is put back, not removed: the dry run counted it as
    bytes to free and the prune said nothing of it, nor of a leftover whose lock was held."""
    first, second = sorted((store / "runs").iterdir())
    old = store / "runs" / f".old-{first.name}-99999"
    os.rename(first, old)
    tmp = store / "runs" / f".tmp-{second.name}-prune99999-deadbeef"
    os.rename(second, tmp)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--leftovers", "--dry-run")
    assert code == 0 and f"would put back (an entry a kill left mid-swap) runs/{old.name}" in out
    assert f"would remove 1, freeing {sum(f.stat().st_size for f in tmp.iterdir())} bytes" in out
    with FileLock(store / "locks" / f"{second.name}.lock", thread_local=False):
        held = subprocess.run([sys.executable, "-m", "harness", "store", "prune", "--store", str(store),
                               "--leftovers"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert held.returncode == 0 and f"put back runs/{first.name} (an entry a kill left mid-swap)" in held.stdout
    assert f"skipped runs/{tmp.name}: in use" in held.stdout and "removed 0 of 1 leftovers" in held.stdout
    assert admin.read_entry(first).status == "complete" and tmp.is_dir()


def test_a_leftover_the_file_system_keeps_is_exit_1(store, capsys, monkeypatch) -> None:
    """`--leftovers` said exit 0 whatever clean() could not remove; a leftover that stays with its
    lock free is a failure (exit 1), one whose lock is held is in use (exit 0, above)."""
    import harness.store as store_mod

    entry = sorted((store / "runs").iterdir())[0]
    tmp = store / "runs" / f".tmp-{entry.name}-prune99999-deadbeef"
    os.rename(entry, tmp)
    monkeypatch.setattr(store_mod, "rmtree", lambda path: None)  # as a folder the file system will not delete
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--leftovers")
    assert code == 1 and f"skipped runs/{tmp.name}: could not be removed" in out and tmp.is_dir()
    assert "removed 0 of 1 leftovers" in out


@pytest.mark.slow
def test_no_entry_todays_code_writes_is_unreachable_or_unknown(tmp_path) -> None:
    """Every kind of run (base, folds, SSFT halves, stability members, duplicates, subset + augment +
    bf16): `--unreachable` selects none of them and `info` claims none unknown."""
    root, store = tmp_path, str(tmp_path / "store")
    run = [sys.executable, "-m", "harness", "run", "--no-progress", "--dataset", "digits", "--seeds", "1",
           "--epochs", "2", "--store", store, "--overwrite"]
    for extra in (["--tasks", "mislabeled,duplicates,memorization,privacy,suspects", "--noise-rates", "0.1",
                   "--proxies", "final_loss,ssft,confident_learning", "--task-arg", "memorization.k=4",
                   "--duplicate-pairs", "3"],
                  ["--tasks", "mislabeled", "--proxies", "final_loss", "--noise-rates", "0.1", "--subset", "500",
                   "--augment", "on", "--precision", "bf16"]):
        proc = subprocess.run([*run, *extra, "--out", str(root / "out")], cwd=REPO, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    found = admin.scan(Path(store))
    assert len(found.entries) >= 20 and {(e.status, e.reach, e.own) for e in found.entries} == {
        ("complete", "current", True)}
    proc = subprocess.run([sys.executable, "-m", "harness", "store", "prune", "--store", store, "--unreachable",
                           "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "would remove 0, freeing 0 bytes" in proc.stdout
