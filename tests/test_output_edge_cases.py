"""--out at the edges: a mount point (Docker volume, tmpfs), a parent memprox may not write, a
staging folder of a process in another PID namespace, something in the way of an output, the mode
of output files, `~` in path options, and an --out or --store inside (or around) the data.

Each case here failed before its fix: after training (EXDEV, a file named `scores`), before it with
a false message (a writable --out under a read-only parent), by deleting a live experiment's staging
folder (its PID looked dead from another container), or silently (0600 outputs, a folder named `~`,
results written into an image folder as a class).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from test_output_safety import (
    NEW,
    OLD,
    USER_FILES,
    Killed,
    _assert_kept,
    _assert_record_matches,
    _prepare,
    _raise_at_rename,
    _tree,
    _user_files,
)

from harness import file_swap, io, outputs
from harness.api import experiment_config
from harness.cli import build_parser, main, run_options
from harness.config import data_folders
from harness.errors import HarnessError, StorageError
from harness.experiment import Experiment
from harness.io import atomic_write_text
from harness.outputs import RECORD, STAGING_LOCK, STAGING_MARKER, check_out, clean_stale, publish
from harness.outputs import staging as make_staging

REPO = Path(__file__).resolve().parents[1]

# --- helpers --------------------------------------------------------------------------------------------


def _inside(path: str | os.PathLike, root: Path) -> bool:
    path = os.path.abspath(os.fspath(path))
    return path == str(root) or path.startswith(str(root) + os.sep)


def _as_mount_point(monkeypatch, out: Path) -> None:
    """Renames between `out` and anywhere outside it fail with EXDEV, as they do when `out` is a
    mount point (a Docker volume, a tmpfs) or a bind mount (where even st_dev is the same)."""
    root = out.resolve()

    def guarded(real):
        def rename(src, dst, *args, **kwargs):
            if _inside(src, root) != _inside(dst, root):
                raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(os, "rename", guarded(os.rename))
    monkeypatch.setattr(os, "replace", guarded(os.replace))


def _read_only(monkeypatch, folder: Path) -> None:
    """Nothing can be created in, renamed into or out of `folder` itself (its subfolders stay
    writable), as for a read-only parent of a writable mount point; the suite may run as root,
    which chmod does not stop. tempfile and Path.mkdir create through os.open and os.mkdir."""
    folder = str(folder.resolve())

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    def parent(path) -> str:
        return os.path.dirname(os.path.abspath(os.fspath(path)))

    real_open, real_mkdir, real_rename, real_replace = os.open, os.mkdir, os.rename, os.replace

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and parent(path) == folder and not os.path.exists(path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if parent(path) == folder:
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def moving(real):
        def rename(src, dst, *args, **kwargs):
            if folder in (parent(src), parent(dst)):
                refuse(dst)
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "rename", moving(real_rename))
    monkeypatch.setattr(os, "replace", moving(real_replace))


def _no_debris(out: Path) -> None:
    """Nothing memprox works with is left beside --out or inside it (lock, staging, set-aside, probe)."""
    left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    left += [p.name for p in out.iterdir() if p.name.startswith((".memprox-", ".write-test-")) and p.name != RECORD]
    assert left == [], left


def _force_inside(monkeypatch) -> None:
    """Stage inside --out whenever it exists (what a mount point gets), with plain renames."""
    monkeypatch.setattr(outputs, "_work_place", lambda out: out if out.is_dir() else out.parent)


# --- 1. an --out on another file system than its parent ----------------------------------------------------


def test_an_out_on_another_file_system_than_its_parent_is_written_and_rewritten(make_config, monkeypatch) -> None:
    """A Docker volume or tmpfs as --out: staged beside it, every run used to fail with EXDEV after
    training. Now the staging (and, on a rerun, the set-aside) folder is made inside it."""
    cfg = make_config(epochs=1)
    cfg.out.mkdir()
    _as_mount_point(monkeypatch, cfg.out)
    Experiment(cfg).run()
    assert (cfg.out / "leaderboard.csv").exists() and (cfg.out / "scores").is_dir()
    _assert_record_matches(cfg.out)
    _no_debris(cfg.out)
    mine = _user_files(cfg.out)
    Experiment(replace(cfg, overwrite=True)).run()  # swapped in with rollback, set aside inside --out
    _assert_kept(cfg.out, mine)
    _assert_record_matches(cfg.out)
    _no_debris(cfg.out)
    Experiment(cfg).run()  # a record of this experiment: no --overwrite needed, the working names are no content
    _no_debris(cfg.out)


def test_an_empty_mount_point_is_no_other_experiments_folder(make_config, monkeypatch) -> None:
    """The staging folder inside an empty --out is not content: publishing into it needs no --overwrite."""
    cfg = make_config(epochs=1)
    cfg.out.mkdir()
    _as_mount_point(monkeypatch, cfg.out)
    exp = Experiment(cfg)
    with make_staging(cfg.out) as tmp:
        assert tmp.parent == cfg.out.resolve() and tmp.name.startswith(".memprox-tmp-")
        check_out(cfg.out, exp.identity, overwrite=False, store=cfg.store)  # a second experiment's check
    exp.run()
    _assert_record_matches(cfg.out)


def test_a_writable_out_under_a_parent_memprox_may_not_write_is_used(make_config, tmp_path, monkeypatch) -> None:
    """It used to be refused before training as "not writable": only the parent was."""
    cfg = make_config(epochs=1, out=tmp_path / "ro" / "out")
    cfg.out.mkdir(parents=True)
    _read_only(monkeypatch, cfg.out.parent)
    Experiment(cfg).run()
    Experiment(replace(cfg, overwrite=True)).run()
    _assert_record_matches(cfg.out)
    _no_debris(cfg.out)


def test_an_out_that_does_not_exist_under_a_read_only_parent_is_refused_before_training(make_config, tmp_path,
                                                                                        monkeypatch) -> None:
    cfg = make_config(epochs=1, out=tmp_path / "ro" / "out")
    cfg.out.parent.mkdir()
    _read_only(monkeypatch, cfg.out.parent)
    with pytest.raises(HarnessError, match=f"output folder {cfg.out} is not writable"):
        Experiment(cfg)


@pytest.mark.parametrize("flag", ["out", "store"])
def test_missing_parents_under_a_read_only_folder_are_refused_before_training(make_config, tmp_path, monkeypatch,
                                                                              flag) -> None:
    """The write check of a folder not made yet probes the nearest folder that exists (it makes
    none: bad input found later would leave them behind)."""
    cfg = make_config(epochs=1, **{flag: tmp_path / "ro" / "a" / "b" / flag})
    (tmp_path / "ro").mkdir()
    _read_only(monkeypatch, tmp_path / "ro")
    with pytest.raises(HarnessError, match="is not writable"):
        Experiment(cfg)
    assert not any((tmp_path / "ro").iterdir())


def test_missing_parents_of_out_and_store_are_made_when_training_starts(make_config, tmp_path) -> None:
    cfg = make_config(epochs=1, out=tmp_path / "a" / "b" / "out", store=tmp_path / "c" / "d" / "store")
    experiment = Experiment(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    experiment.run()
    _assert_record_matches(cfg.out)
    _no_debris(cfg.out)
    assert len(list((cfg.store / "runs").iterdir())) == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes a 0555 folder anyway")
def test_a_writable_out_under_a_0555_parent_is_used(make_config, tmp_path) -> None:
    cfg = make_config(epochs=1, out=tmp_path / "ro" / "out")
    cfg.out.mkdir(parents=True)
    cfg.out.parent.chmod(0o555)
    try:
        Experiment(cfg).run()
        Experiment(replace(cfg, overwrite=True)).run()
    finally:
        cfg.out.parent.chmod(0o755)
    _assert_record_matches(cfg.out)
    _no_debris(cfg.out)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="mounting a tmpfs needs root on Linux")
def test_a_tmpfs_mounted_as_out_is_written(make_config, tmp_path) -> None:
    out = tmp_path / "volume"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("this container may not mount a tmpfs")
    try:
        cfg = make_config(epochs=1, out=out)
        Experiment(cfg).run()
        Experiment(replace(cfg, overwrite=True)).run()
        _assert_record_matches(out)
        _no_debris(out)
    finally:
        subprocess.run(["umount", str(out)], check=True)


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_a_failure_at_any_rename_of_a_publish_inside_out_rolls_back(tmp_path, monkeypatch, error) -> None:
    """The swap-in-complete guarantee where the staging and set-aside folders are inside --out."""
    out = tmp_path / "out"
    _force_inside(monkeypatch)
    with make_staging(out) as tmp:
        for rel, text in OLD.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        outputs.write_record(tmp, "e1")
        publish(tmp, out, "e1", overwrite=False)
    _user_files(out)
    before, fail_at = _tree(out), 0
    while True:
        fail_at += 1
        staging, tmp = _prepare(out, "e1", NEW)
        assert tmp.parent == out
        with pytest.MonkeyPatch.context() as mp:
            _raise_at_rename(mp, fail_at, error)
            try:
                publish(tmp, out, "e1", overwrite=False)
                done = True
            except (OSError, KeyboardInterrupt):
                done = False
        staging.__exit__(None, None, None)
        _no_debris(out)
        if done:
            break
        assert _tree(out) == before, f"failure at rename {fail_at}"
    assert fail_at > len(OLD) + len(NEW)
    assert (out / "figures" / "f.png").read_text() == "new fig" and not (out / "scores" / "gone.csv").exists()
    _assert_kept(out, USER_FILES)
    _assert_record_matches(out)


def test_a_kill_part_way_inside_out_is_settled_by_the_next_process(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    _force_inside(monkeypatch)
    with make_staging(out) as tmp:
        (tmp / "leaderboard.csv").write_text("old board")
        (tmp / "scores").mkdir()
        (tmp / "scores" / "a.csv").write_text("old a")
        outputs.write_record(tmp, "e1")
        publish(tmp, out, "e1", overwrite=False)
    before = _tree(out)
    staging, tmp = _prepare(out, "e1", {"leaderboard.csv": "new board", "scores/b.csv": "new b"})
    calls = [0]
    with pytest.MonkeyPatch.context() as mp:
        real = os.rename

        def killed_at_third(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                raise Killed
            return real(*args, **kwargs)

        mp.setattr(os, "rename", killed_at_third)
        mp.setattr(file_swap, "roll_back", lambda aside, journal: False)
        with pytest.raises(Killed):
            publish(tmp, out, "e1", overwrite=False)
    staging.__exit__(None, None, None)
    (aside,) = [p for p in out.iterdir() if p.name.startswith(".memprox-old-")]
    clean_stale(out)  # under the folder's lock no swap runs: a set-aside folder with its journal is stale
    assert _tree(out) == before
    _no_debris(out)


# --- 2. staging folders are judged by their lock, not by a PID ---------------------------------------------


_HOLDER = textwrap.dedent("""
    import sys, time
    from harness.outputs import staging
    with staging(sys.argv[1]) as tmp:
        print(tmp, flush=True)
        time.sleep(120)
""")


def test_a_live_staging_folder_is_kept_whatever_its_pid_says_and_a_dead_ones_removed(tmp_path, monkeypatch) -> None:
    """A process in another PID namespace (a container sharing the volume) sees every PID of this one
    as dead, or as some other process: only the folder's lock tells."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        tmp = Path(holder.stdout.readline().strip())
        assert (tmp / STAGING_MARKER).is_file()
        monkeypatch.setattr("harness.outputs_leftovers.pid_alive", lambda pid: False)  # seen from another PID namespace
        clean_stale(out)
        check_out(out, "e1", overwrite=False, store=tmp_path / "store")
        assert (tmp / STAGING_MARKER).is_file(), "a live experiment's staging folder was deleted"
        assert (tmp / STAGING_LOCK).is_file()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    monkeypatch.setattr("harness.outputs_leftovers.pid_alive", lambda pid: True)  # its PID reused by another process
    clean_stale(out)
    assert not tmp.exists()


def test_a_staging_folder_of_an_older_memprox_is_still_judged_by_its_pid(tmp_path) -> None:
    """Older versions took no lock (no lock file): the PID in the name is all there is."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old, live = tmp_path / f".out.tmp-{dead.pid}-old", tmp_path / f".out.tmp-{os.getpid()}-live"
    for folder in (old, live):
        folder.mkdir()
        (folder / STAGING_MARKER).write_text("")
    clean_stale(out)
    assert not old.exists() and live.exists()


def test_the_staging_lock_is_never_an_output(tmp_path) -> None:
    with make_staging(tmp_path / "out") as tmp:
        (tmp / "leaderboard.csv").write_text("x")
        outputs.write_record(tmp, "e1")
        assert list(json.loads((tmp / RECORD).read_text())["files"]) == ["leaderboard.csv"]
        publish(tmp, tmp_path / "out", "e1", overwrite=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [RECORD, "leaderboard.csv"]


# --- 3. something in the way of an output: refused before training --------------------------------------------


@pytest.mark.parametrize("blocker", ["scores-file", "scores-link", "leaderboard-folder", "summary-folder",
                                     "record-folder"])
def test_something_in_the_way_of_an_output_is_refused_before_training(make_config, tmp_path, blocker) -> None:
    cfg = make_config(epochs=1, overwrite=True)
    cfg.out.mkdir()
    if blocker == "scores-file":
        (cfg.out / "scores").write_text("mine")
    elif blocker == "scores-link":
        (tmp_path / "elsewhere").mkdir()
        (cfg.out / "scores").symlink_to(tmp_path / "elsewhere")
    else:
        name = {"leaderboard-folder": "leaderboard.csv", "summary-folder": "summary.json",
                "record-folder": RECORD}[blocker]
        (cfg.out / name).mkdir()
    before = _tree(cfg.out)
    with pytest.raises(HarnessError, match="where memprox writes its .*move it away"):
        Experiment(cfg)
    assert _tree(cfg.out) == before and not (cfg.store / "runs").exists()


def test_something_in_the_way_is_one_error_line_from_the_cli(tmp_path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scores").write_text("mine")
    argv = ["run", "--no-progress", "--seeds", "1", "--noise-rates", "0.1", "--tasks", "mislabeled", "--proxies",
            "csl", "--epochs", "1", "--device", "cpu", "--overwrite", "--out", str(tmp_path / "out"),
            "--store", str(tmp_path / "store")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "scores" in err[0] and "is a file" in err[0]
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())


def test_an_output_name_the_record_does_not_list_is_refused_before_training(make_config) -> None:
    """A file at a name every experiment writes that this experiment's record does not list is the
    user's: without --overwrite it used to be refused only after training."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    record = json.loads((cfg.out / RECORD).read_text())
    del record["files"]["raw.csv"]
    (cfg.out / RECORD).write_text(json.dumps(record))
    with pytest.raises(HarnessError, match="raw.csv was not written by memprox.*--overwrite"):
        Experiment(cfg)
    Experiment(replace(cfg, overwrite=True)).run()


# --- 4. output files follow the umask ----------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_atomic_writes_follow_the_umask(tmp_path, umask_022) -> None:
    assert io.umask() == 0o022 and os.umask(0o022) == 0o022  # read without changing it
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o077)
    assert io.umask() == 0o077
    assert stat.S_IMODE(atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_outputs_and_store_arrays_follow_the_umask(make_config, umask_022) -> None:
    """Outputs were 0600 whatever the umask (mkstemp), while their folders followed it."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    files = [p for p in [*cfg.out.rglob("*"), *(cfg.store / "runs").rglob("*")] if p.is_file()]
    assert files and {p.relative_to(p.parents[1]).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files
                      if stat.S_IMODE(p.stat().st_mode) != 0o644} == {}


# --- 5. ~ in path options --------------------------------------------------------------------------------------


def test_tilde_is_expanded_in_every_path_option(tmp_path, monkeypatch) -> None:
    """`--out=~/mo` (the shell leaves it alone) made a folder named "~" in the current one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    args = build_parser().parse_args(["run", "--out=~/mo", "--store=~/st", "--data-root=~/data", "--tasks",
                                      "mislabeled", "--noise-rates", "0.1"])
    cfg = experiment_config(**run_options(args))
    assert (cfg.out, cfg.store, cfg.data_root) == (home / "mo", home / "st", home / "data")
    cfg = experiment_config(out="~/mo", store=Path("~/st"), tasks="mislabeled", noise_rates=0.1)
    assert (cfg.out, cfg.store) == (home / "mo", home / "st")
    assert experiment_config(out="x/~", tasks="mislabeled", noise_rates=0.1).out == Path("x/~")  # only a leading ~
    with pytest.raises(HarnessError, match="out='~no_such_user_xyz/mo'.*without ~"):
        experiment_config(out="~no_such_user_xyz/mo", tasks="mislabeled", noise_rates=0.1)
    assert not (tmp_path / "~").exists()


# --- 6. --out and --store apart from the data ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["out-inside-data", "out-is-data", "out-contains-data", "store-inside-data",
                                    "out-inside-data-root", "via-symlink"])
def test_out_or_store_overlapping_the_data_is_refused(tmp_path, layout) -> None:
    data = tmp_path / "d" / "images"
    (data / "cat").mkdir(parents=True)
    out, store, paths = tmp_path / "out", tmp_path / "store", [data]
    if layout == "out-inside-data":
        out = data / "results"
    elif layout == "out-is-data":
        out = data
    elif layout == "out-contains-data":
        out = tmp_path / "d"
    elif layout == "store-inside-data":
        store = data / "store"
    elif layout == "out-inside-data-root":
        paths = [tmp_path / "nowhere", tmp_path / "labels.npy", data]  # missing paths and files do not count
        (tmp_path / "labels.npy").write_bytes(b"")
        out = data / "cat" / "results"
    else:
        (tmp_path / "link").symlink_to(data)
        out = tmp_path / "link" / "results"
    flag = "--store" if layout == "store-inside-data" else "--out"
    with pytest.raises(HarnessError, match=f"{flag} .* the dataset folder {data}; .*apart from the data"):
        check_out(out, "e1", overwrite=False, store=store, data_paths=paths)
    assert not (data / "results").exists() and not (data / "store").exists()
    assert sorted(p.name for p in data.iterdir()) == ["cat"]


def test_data_folders_of_a_config(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = experiment_config(dataset="imagefolder:~/images", data_root="~/torchvision", tasks="mislabeled",
                            noise_rates=0.1)
    assert data_folders(cfg) == (tmp_path / "images",)  # an image folder never reads --data-root
    cfg = experiment_config(dataset="cifar10", data_root="~/torchvision", tasks="mislabeled", noise_rates=0.1)
    assert data_folders(cfg) == (tmp_path / "torchvision",)
    assert data_folders(experiment_config(tasks="mislabeled", noise_rates=0.1)) == ()


def test_an_out_beside_the_data_is_accepted(tmp_path) -> None:
    (tmp_path / "images" / "cat").mkdir(parents=True)
    check_out(tmp_path / "results", "e1", overwrite=False, store=tmp_path / "store",
              data_paths=[tmp_path / "images"])


# --- the failure after training still names the path -----------------------------------------------------------


def test_a_failure_inside_a_mount_point_after_training_names_the_path(make_config, monkeypatch) -> None:
    cfg = make_config(epochs=1)
    cfg.out.mkdir()
    _as_mount_point(monkeypatch, cfg.out)
    exp = Experiment(cfg)
    real = tempfile.mkstemp

    def full(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).name.startswith(".memprox-tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(StorageError, match=f"{cfg.out}.*No space left on device.*every run is kept"):
        exp.run()
    monkeypatch.undo()
    assert all(exp.store.get(spec) is not None for spec in exp.plan.runs)
    _no_debris(cfg.out)
    assert [p.name for p in cfg.out.iterdir()] == []


def test_a_folder_of_the_users_files_is_refused_naming_them(tmp_path: Path) -> None:
    """Before: "holds results of another experiment (or files memprox cannot show it wrote)" for a
    folder holding only the user's notes.txt, which named neither the file nor the cause."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match=r"holds files memprox has no record of writing \(notes.txt\)"):
        outputs.check_out(out, "an-experiment", False, tmp_path / "store")
    for i in range(4):
        (out / f"z{i}.csv").write_text("")
    with pytest.raises(HarnessError, match=r"\(notes.txt, z0.csv, z1.csv and 2 more\), yours or a memprox's "
                       "before 1 December 2026; pass another --out"):
        outputs.check_out(out, "an-experiment", False, tmp_path / "store")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "z0.csv", "z1.csv", "z2.csv", "z3.csv"]
