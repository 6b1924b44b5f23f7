"""`memprox store info` and `memprox store prune` on a real store (one tiny digits experiment per module).

What a prune must never touch (a user's files and links planted in runs/ and partial/, entries in
use, entries holding foreign files) survives every prune here; byte counts are checked against an
independent os.lstat sum; what stays still serves a rerun with no training.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

import harness.store_admin as admin
from harness.cli import main
from harness.manifest import Manifest
from harness.recipe import Recipe, without_defaults
from harness.runspec import _ADDED_RECIPE_DEFAULTS, STORE_FORMAT, Corruption, DataSpec, RunSpec, TrainSubset

REPO = Path(__file__).resolve().parents[1]
RUN = ["--no-progress", "--dataset", "digits", "--seeds", "1", "--noise-rates", "0.1", "--tasks", "mislabeled",
       "--epochs", "2"]
BASE = "digits noise=0.1 mlp seed0"  # the label of the base run; the two SSFT runs add on=/then=


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A real store: one base run and two SSFT runs (3 entries), trained once for the module, in this
    process (a subprocess costs seconds of imports)."""
    root = tmp_path_factory.mktemp("built")
    code = main(["run", *RUN, "--proxies", "final_loss,ssft", "--executor", "inprocess", "--store", str(root / "store"),
                 "--out", str(root / "out")])
    assert code == 0
    return root / "store"


FOREIGN = ("runs/notes.txt", "runs/my-folder/keep.npy", "runs/.tmp-not-ours", "partial/mine.pt",
           "partial/0123456789abcdef0123.pt")  # the last: named as a checkpoint, not a zip


@pytest.fixture
def store(built, tmp_path) -> Path:
    """A copy of the built store with a user's files, folders and links planted in runs/ and partial/."""
    root = tmp_path / "store"
    shutil.copytree(built, root, symlinks=True)
    for name in FOREIGN:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("user data")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("precious")
    (root / "runs" / "link-out").symlink_to(outside)
    (root / "runs" / ("f" * 20)).symlink_to(outside)  # a link named as an entry
    (root / "partial" / ("e" * 20 + ".pt")).symlink_to(_zip(tmp_path / "real.zip"))  # a link to a zip
    return root


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", b"x" * 100)
    return path


def _foreign_intact(root: Path) -> None:
    for name in FOREIGN:
        assert (root / name).read_text() == "user data", name
    assert (root / "runs" / "link-out").is_symlink() and (root / "runs" / ("f" * 20)).is_symlink()
    assert (root / "runs" / "link-out" / "precious.txt").read_text() == "precious"
    assert (root / "partial" / ("e" * 20 + ".pt")).is_symlink()
    for sub in ("runs", "partial", "locks"):
        assert (root / sub).is_dir()


def _entries(root: Path) -> dict[str, str]:
    """digest -> label of the entries that read as complete."""
    return {p.name: json.loads((p / "manifest.json").read_text())["label"] for p in (root / "runs").iterdir()
            if admin.DIGEST.fullmatch(p.name) and not p.is_symlink() and admin.read_entry(p).status == "complete"}


def _stat_bytes(folder: Path) -> int:
    return sum(os.lstat(p).st_size for p in folder.iterdir())


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- info -----------------------------------------------------------------------------------------

def test_info_counts_and_bytes_equal_an_independent_stat_sum(store, capsys) -> None:
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store), "--runs")
    assert code == 0
    entries = {p.name: _stat_bytes(p) for p in (store / "runs").iterdir()
               if admin.DIGEST.fullmatch(p.name) and not p.is_symlink()}
    assert len(entries) == 3
    assert f"complete entries: 3, {sum(entries.values())} bytes" in out
    for digest, nbytes in entries.items():
        (line,) = [ln for ln in out.splitlines() if ln.startswith(digest)]
        assert f" {nbytes} " in line and "complete" in line
    assert "foreign entries: 1" in out  # the link named as an entry
    assert "digits     mlp              3" in out
    assert "partial checkpoints: 0, 0 bytes" in out


def test_info_only_reads_a_read_only_store_and_makes_nothing(store, capsys, monkeypatch) -> None:
    shutil.rmtree(store / "locks")
    shutil.rmtree(store / "partial")
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    _read_only(monkeypatch, store)
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert code == 0 and "complete entries: 3" in out
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == before


def test_info_on_a_folder_that_is_no_store_says_so_and_makes_nothing(tmp_path, capsys) -> None:
    code, _, err = _cli(capsys, "store", "info", "--store", str(tmp_path))
    assert code == 2 and "holds no run store" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "needle"), [
    ((), "needs a selection"),
    (("--all", "--dry-rn"), "did you mean --dry-run"),
    (("--older-than", "-1"), "--older-than takes a number"),
    (("--older-than", "nan"), "--older-than takes a number"),
    (("--older-than", "ten"), "--older-than takes a number"),
    (("--dataset", "cifar10"), "it holds: digits"),
    (("--model", "resnet18"), "it holds: mlp"),
    (("--partial", "--dataset", "digits"), "--partial selects checkpoints"),
    (("--all", "--all"), "given more than once"),
])
def test_bad_prune_input_is_one_line_exit_2_and_removes_nothing(store, capsys, args, needle) -> None:
    before = _entries(store)
    code, out, err = _cli(capsys, "store", "prune", "--store", str(store), *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and out == ""
    assert _entries(store) == before


def test_prune_refuses_a_folder_that_is_no_store_and_a_read_only_store(store, tmp_path, capsys, monkeypatch) -> None:
    code, _, err = _cli(capsys, "store", "prune", "--store", str(tmp_path / "nothing"), "--all")
    assert code == 2 and "does not exist" in err and not (tmp_path / "nothing").exists()
    before = _entries(store)
    _read_only(monkeypatch, store)
    code, _, err = _cli(capsys, "store", "prune", "--store", str(store), "--all")
    assert code == 2 and "is not writable (Read-only file system)" in err and len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    assert _entries(store) == before


# --- prune --------------------------------------------------------------------------------------------

def test_prune_removes_the_selection_and_the_rest_serves_a_rerun_without_training(store, tmp_path, capsys) -> None:
    ssft = {d for d, label in _entries(store).items() if "then=" in label}
    freed = sum(_stat_bytes(store / "runs" / d) for d in ssft)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", "then=", "--dry-run")
    assert code == 0 and f"would remove 2, freeing {freed} bytes" in out and len(_entries(store)) == 3
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", "then=",
                        "--dataset", "digits", "--older-than", "0")
    assert code == 0 and f"removed 2 of 2 selected, freed {freed} bytes" in out
    assert set(_entries(store).values()) == {BASE}
    assert not [p for p in (store / "runs").iterdir() if p.name.startswith(".tmp-") and "prune" in p.name]
    _foreign_intact(store)
    code, _, err = _cli(capsys, "run", *RUN, "--proxies", "final_loss", "--store", str(store),
                        "--out", str(tmp_path / "out"))
    assert code == 0 and "runs: 0 trained, 1 reused from the store" in err


def test_older_than_keeps_entries_younger_than_the_days_given(store, capsys) -> None:
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--older-than", "1")
    assert code == 0 and "removed 0 of 0 selected" in out and len(_entries(store)) == 3


def _as_older_version(entry: Path) -> Path:
    """Rewrite an entry as a memprox before TIE_RULE_VERSION would have stored a bf16 run: the same spec
    (precision bf16) hashed without the tie rule, a manifest whose checksums all hold."""
    manifest = Manifest.from_json((entry / "manifest.json").read_bytes())
    manifest.spec["recipe"]["precision"] = "bf16"
    spec = admin.rebuild_spec(manifest.spec)
    raw = spec.to_dict()
    raw["recipe"] = without_defaults(raw["recipe"], _ADDED_RECIPE_DEFAULTS)
    raw["data"].pop("dataset_sha")
    old = hashlib.sha256(json.dumps({"format": STORE_FORMAT, "spec": raw}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:20]
    assert old != spec.digest()
    manifest.spec_hash = old
    (entry / "manifest.json").write_text(manifest.to_json())
    return entry.rename(entry.parent / old)


def test_unreachable_selects_exactly_an_entry_of_an_older_version(store, capsys) -> None:
    entries = _entries(store)
    base = next(d for d, label in entries.items() if label == BASE)
    old = _as_older_version(store / "runs" / base)
    assert admin.read_entry(old).status == "complete"  # the store itself still reads it as complete
    assert admin.read_entry(old).reach == "unreachable"
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert f"of which unreachable: 1, {_stat_bytes(old)} bytes" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--unreachable")
    assert code == 0 and f"removed runs/{old.name}" in out and "removed 1 of 1" in out
    assert set(_entries(store)) == set(entries) - {base}  # the current SSFT entries stay
    _foreign_intact(store)


def test_a_spec_today_cannot_rebuild_exactly_is_never_unreachable(store, capsys) -> None:
    digest = next(iter(_entries(store)))
    path = store / "runs" / digest
    manifest = Manifest.from_json((path / "manifest.json").read_bytes())
    manifest.spec["recipe"]["removed_field"] = 1  # a field a later memprox dropped
    (path / "manifest.json").write_text(manifest.to_json())
    assert admin.read_entry(path).reach == "unknown"
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--unreachable")
    assert code == 0 and "removed 0 of 0" in out and path.is_dir()


def _kinds() -> list[RunSpec]:
    base = RunSpec(DataSpec("digits"), "mlp", Recipe(epochs=3, milestones=(1, 2)), seed=1)
    labels = Corruption("label_file", label_file="/x/labels.npz:y", label_file_sha="ab" * 8)
    return [base,
            RunSpec(DataSpec("digits", subset=500, corruption=Corruption("noise", 0.2, seed=3)), "mlp", Recipe()),
            RunSpec(DataSpec("digits", corruption=labels), "mlp", Recipe(augment=False)),
            RunSpec(DataSpec("digits", corruption=Corruption("duplicates", pairs=7)), "mlp", Recipe()),
            RunSpec(DataSpec("npz:/d.npz", dataset_sha="12" * 8), "mlp", Recipe(precision="bf16")),
            base.with_subset(TrainSubset("fold", 2, 5, 4)),
            base.with_subset(TrainSubset("half", 0, 2, 1), TrainSubset("half", 1, 2, 1)),
            base.with_subset(TrainSubset("random", 3, 1, 2, 0.7)),
            RunSpec(DataSpec("digits"), "mlp", Recipe(schedule="onecycle", epochs=7, augment_epochs=3,
                                                      channels_last=True))]


@pytest.mark.parametrize("spec", _kinds(), ids=lambda s: s.label())
def test_reachability_is_exact_for_every_kind_of_spec(spec) -> None:
    raw = json.loads(json.dumps(spec.to_dict(), default=str))  # as the manifest stores it
    assert admin.rebuild_spec(raw) == spec
    assert admin.reachability(raw, spec.digest()) == "current"
    assert admin.reachability(raw, "0" * 20) == "unreachable"
    for key in ("precision", "channels_last", "augment_epochs"):  # written before these fields existed
        if raw["recipe"][key] == Recipe.__dataclass_fields__[key].default:
            del raw["recipe"][key]
    assert admin.reachability(raw, spec.digest()) == "current"


def test_damaged_selects_only_damaged_entries_of_the_stores_own(store, capsys) -> None:
    entries = sorted(_entries(store))
    bad, shared = store / "runs" / entries[0], store / "runs" / entries[1]
    for path in (bad, shared):
        npy = next(path.glob("*.npy"))
        npy.write_bytes(npy.read_bytes()[:-1] + b"\x00")
    (shared / "README.txt").write_text("my notes")  # not the store's own: never removed
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert "damaged entries: 2" in out and "complete entries: 1" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--damaged")
    assert code == 0 and f"removed runs/{bad.name}" in out and not bad.exists()
    assert (shared / "README.txt").read_text() == "my notes" and entries[2] in _entries(store)
    _foreign_intact(store)


def test_an_entry_holding_a_users_file_is_kept_with_a_line_saying_why(store, capsys) -> None:
    """`--all` matched it and said nothing: "removed 2 of 2 selected" with a third entry still there
    (docs audit; store.md promises a line for what is skipped)."""
    entries = sorted(_entries(store))
    mine = store / "runs" / entries[1] / "mine.npy"
    mine.write_text("mine")
    for dry in (["--dry-run"], []):
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all", *dry)
        assert code == 0
        kept = [line for line in out.splitlines() if line.startswith("kept ")]
        assert kept == [f"kept runs/{entries[1]}  {_entries(store)[entries[1]]}: it holds files that are not the "
                        "store's own, which prune never removes; move them out of it to prune it"]
    assert "removed 2 of 2 selected" in out and mine.read_text() == "mine" and list(_entries(store)) == [entries[1]]
    # criteria the entry does not meet: not selected, no line
    mine.unlink()
    (store / "runs" / entries[1] / "other.txt").write_text("mine")
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", "no such label")
    assert "kept" not in out


def test_an_entry_replaced_since_the_scan_is_rechecked_under_its_lock(store) -> None:
    digest = next(iter(_entries(store)))
    freed, why = admin.remove_entry(store, digest, admin.Selection(damaged=True), admin_now())
    assert freed is None and why == "changed since the scan" and digest in _entries(store)


def admin_now() -> datetime:
    return datetime.now(timezone.utc)


# --- concurrency, locks, Ctrl-C ----------------------------------------------------------------------

def _hold_lock(lock: Path) -> subprocess.Popen:
    code = ("import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_an_entry_or_checkpoint_whose_lock_another_process_holds_is_skipped(store, capsys) -> None:
    busy = next(d for d, label in _entries(store).items() if label == BASE)
    free_ckpt, busy_ckpt = "1" * 20, "2" * 20
    for d in (free_ckpt, busy_ckpt):
        _zip(store / "partial" / f"{d}.pt")
    holders = [_hold_lock(store / "locks" / f"{d}.lock") for d in (busy, busy_ckpt)]
    try:
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all")
        assert code == 0 and f"skipped runs/{busy}" in out and "in use by another process" in out
        assert "removed 2 of 3 selected" in out and set(_entries(store)) == {busy}
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--partial")
        assert code == 0 and f"removed partial/{free_ckpt}.pt" in out and f"skipped partial/{busy_ckpt}.pt" in out
        assert (store / "partial" / f"{busy_ckpt}.pt").is_file()
        assert not (store / "partial" / f"{free_ckpt}.pt").exists()
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    _foreign_intact(store)


def test_two_prunes_at_once_remove_each_entry_once(store, tmp_path) -> None:
    template = next(p for p in (store / "runs").iterdir() if p.name in _entries(store))
    for i in range(40):  # damaged copies (another spec's manifest): selected by --all too
        shutil.copytree(template, store / "runs" / f"{i:020x}")
    go = tmp_path / "go"
    code = ("import os, sys, time; from harness.cli import main\n"  # imported first: both start together
            "while not os.path.exists(sys.argv[1]): time.sleep(0.005)\n"
            "sys.exit(main(['store', 'prune', '--store', sys.argv[2], '--all']))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(go), str(store)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    removed = [ln.split()[1] for out, _ in outs for ln in out.splitlines() if ln.startswith("removed runs/")]
    assert len(removed) == len(set(removed)) == 43
    assert not [p for p in (store / "runs").iterdir() if admin.DIGEST.fullmatch(p.name) and not p.is_symlink()]
    assert not [p for p in (store / "runs").iterdir() if p.name.startswith(".tmp-") and "prune" in p.name]
    _foreign_intact(store)


def test_ctrl_c_mid_prune_leaves_what_was_removed_removed_and_the_rest_whole(store, capsys, monkeypatch) -> None:
    real = admin.delete_files

    def delete_then_ctrl_c(path: Path, names: tuple[str, ...]) -> int:
        freed = real(path, names)
        os.kill(os.getpid(), signal.SIGINT)  # lands while the removal holds Ctrl-C
        return freed

    monkeypatch.setattr(admin, "delete_files", delete_then_ctrl_c)  # (an entry's removal: rename aside, then this)
    code, _, err = _cli(capsys, "store", "prune", "--store", str(store), "--all")
    assert code == 130 and "interrupted; 1 removed" in err
    assert len(_entries(store)) == 2  # the others read as complete
    assert not [p for p in (store / "runs").iterdir() if p.name.startswith(".tmp-") and "prune" in p.name]
    _foreign_intact(store)


def test_leftovers_of_a_killed_prune_go_with_prune_leftovers(store, capsys) -> None:
    digest = next(iter(_entries(store)))
    aside = store / "runs" / f".tmp-{digest}-prune99999-deadbeef"
    os.rename(store / "runs" / digest, aside)  # as a prune killed between its rename and its delete
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert f"leftovers of killed processes: 1, {_stat_bytes(aside)} bytes" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--leftovers")
    assert code == 0 and f"removed {aside.name}" in out and not aside.exists()
    _foreign_intact(store)


def _read_only(monkeypatch, folder: Path) -> None:
    """As a read-only file system would (the suite may run as root, which chmod does not stop): every
    call that creates, replaces or removes a path under `folder` fails with EROFS (as in
    tests/test_interrupts_review5.py)."""
    folder = folder.resolve()

    def under(path) -> bool:
        return path is not None and Path(os.path.abspath(os.fsdecode(path))).is_relative_to(folder)

    def refuse(real, at):
        def call(*a, **k):
            paths = [a[i] if i < len(a) else k.get(name) for i, name in at]
            if any(under(p) for p in paths):
                raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(next(p for p in paths if under(p))))
            return real(*a, **k)
        return call

    real_open = os.open

    def os_open(path, flags, *a, **k):
        if under(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    for name, at in (("mkdir", [(0, "path")]), ("rename", [(0, "src"), (1, "dst")]),
                     ("replace", [(0, "src"), (1, "dst")]), ("unlink", [(0, "path")]), ("rmdir", [(0, "path")])):
        monkeypatch.setattr(os, name, refuse(getattr(os, name), at))
    for name in ("mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse(getattr(tempfile, name), [(10, "dir")]))



def test_a_run_that_read_an_entry_a_prune_then_removed_stops_with_a_clear_error(store, capsys) -> None:
    """Readers take no lock (`harness.store`): an entry an experiment already found and a prune the user
    asked for then removes fails loudly when its arrays are loaded (exit 1, "rerun"), never silently."""
    from harness.errors import StorageError
    from harness.store import RunStore

    digest = next(d for d, label in _entries(store).items() if label == BASE)
    manifest = Manifest.from_json((store / "runs" / digest / "manifest.json").read_bytes())
    stored = RunStore(store).get(admin.rebuild_spec(manifest.spec))
    assert stored is not None
    code, _, _ = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", BASE)
    assert code == 0 and digest not in _entries(store)
    with pytest.raises(StorageError, match="rerun to recompute it"):
        stored.arrays(next(iter(stored.recorders)))


def test_a_store_that_cannot_be_listed_is_one_line_exit_2(store, capsys, monkeypatch) -> None:
    real = os.listdir

    def refuse(path="."):
        if Path(path) == store / "runs":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", refuse)
    code, _, err = _cli(capsys, "store", "info", "--store", str(store))
    assert code == 2 and "cannot read the run store" in err and "Permission denied" in err


def test_the_default_store_is_the_one_under_memprox_cache(store, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MEMPROX_CACHE", str(store.parent))
    code, out, _ = _cli(capsys, "store", "info")
    assert code == 0 and f"run store: {store}" in out and "complete entries: 3" in out


@pytest.mark.timeout(60)
def test_an_entry_holding_a_fifo_is_foreign_and_never_read_or_pruned(store, capsys) -> None:
    digest = next(iter(_entries(store)))
    path = store / "runs" / digest
    npy = next(path.glob("*.npy"))
    npy.unlink()
    os.mkfifo(npy)  # reading it would wait for a writer forever
    code, out, _ = _cli(capsys, "store", "info", "--store", str(store))
    assert code == 0 and "foreign entries: 2" in out and "complete entries: 2" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all")
    assert code == 0 and "removed 2 of 2 selected" in out and path.is_dir()


def test_a_removal_the_file_system_refuses_is_exit_1_and_leaves_the_entry_whole(store, capsys, monkeypatch) -> None:
    real = os.rename

    def refuse(src, dst, *a, **k):
        if ".tmp-" in os.fsdecode(dst):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(src))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", refuse)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all")
    assert code == 1 and out.count("cannot be removed (Permission denied") == 3 and "removed 0 of 3" in out
    monkeypatch.undo()
    assert len(_entries(store)) == 3


def test_prune_while_a_run_trains_into_the_store_skips_its_checkpoint_and_the_run_finishes(store, tmp_path,
                                                                                          capsys) -> None:
    args = [*RUN[:-1], "20", "--proxies", "final_loss", "--checkpoint-every", "0.1", "--store", str(store),
            "--out", str(tmp_path / "out")]
    run = subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        def checkpoints() -> list[Path]:
            return [p for p in (store / "partial").glob("?" * 20 + ".pt")
                    if not p.is_symlink() and f"partial/{p.name}" not in FOREIGN]

        deadline = time.monotonic() + 60
        while not checkpoints() and time.monotonic() < deadline:
            time.sleep(0.02)
        (ckpt,) = checkpoints()
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--partial")
        assert code == 0 and f"skipped partial/{ckpt.name}: in use by another process" in out
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", "then=")
        assert code == 0 and "removed 2 of 2 selected" in out
    finally:
        _, err = run.communicate(timeout=120)
    assert run.returncode == 0 and "runs: 1 trained" in err, err[-2000:]
    assert sorted(_entries(store).values()) == [BASE, BASE]  # the 2-epoch run kept, the 60-epoch run stored
    assert not ckpt.exists()
    _foreign_intact(store)


def test_a_file_put_in_an_entry_while_it_is_removed_sends_the_entry_back_whole(store, monkeypatch) -> None:
    digest = next(iter(_entries(store)))
    real = admin.read_entry

    def read_then_plant(path: Path) -> admin.Entry:
        entry = real(path)
        (path / "notes.txt").write_text("mine")  # after the check under the lock, before the rename
        return entry

    monkeypatch.setattr(admin, "read_entry", read_then_plant)
    freed, why = admin.remove_entry(store, digest, admin.Selection(everything=True), admin_now())
    assert freed is None and why == "holds files that are not the store's own"
    assert (store / "runs" / digest / "notes.txt").read_text() == "mine" and digest in _entries(store)


def test_a_dry_run_only_reads_so_it_works_on_a_read_only_store(store, capsys, monkeypatch) -> None:
    freed = sum(_stat_bytes(p) for p in (store / "runs").iterdir() if p.name in _entries(store))
    _read_only(monkeypatch, store)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(store), "--all", "--dry-run")
    assert code == 0 and f"would remove 3, freeing {freed} bytes" in out
