"""--out: the harness deletes only files it wrote itself (issue 16, "Data loss").

The output folder carries its own record of what memprox wrote (`.memprox-outputs.json`, each file
with its checksum); only those files, unchanged since, are replaced or removed, and a new set of
outputs is swapped in with rollback. Each case here lost data before the record existed: a
repository used as --out, a store inside --out, a user's notes in an output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness import file_swap, io
from harness.cli import main
from harness.errors import HarnessError, Interrupted, StorageError
from harness.experiment import Experiment
from harness.outputs import RECORD, STAGING_MARKER, check_out, clean_stale, publish, write_record
from harness.outputs import staging as make_staging

# --- helpers --------------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes | None]:
    """Everything under `root`: files with their bytes, folders as None (links by their target)."""
    found: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = os.readlink(path).encode()
            else:
                found[rel] = None if path.is_dir() else path.read_bytes()
    return found


#: A user's things in a folder: a repository, notes, a file of theirs inside `scores/`.
USER_FILES = {".git/HEAD": b"ref: refs/heads/main\n", ".git/objects/ab/cdef": b"blob", "README.md": b"# mine\n",
              "my_notes.md": b"notes\n", "scores/mine.csv": b"a,b\n1,2\n"}


def _user_files(root: Path) -> dict[str, bytes]:
    for rel, data in USER_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return USER_FILES


def _assert_kept(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data, rel


def _assert_record_matches(out: Path) -> dict:
    """The record lists every file memprox wrote with its checksum, and nothing else of ours is there."""
    record = json.loads((out / RECORD).read_text())
    for rel, sha in record["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel
    return record


def _no_debris(out: Path) -> None:
    """No staging or set-aside folder, and no lock file, is left beside --out."""
    left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert left == [], left


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- the reported losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_dot", [False, True], ids=["absolute", "dot"])
def test_a_repository_as_out_survives_repeated_runs(make_config, tmp_path, monkeypatch, as_dot) -> None:
    """`--out . --overwrite` inside a git repository, twice: the repository used to be deleted."""
    repo = tmp_path / "repo"
    repo.mkdir()
    mine = _user_files(repo)
    if as_dot:
        monkeypatch.chdir(repo)
    cfg = make_config(epochs=1, out=Path(".") if as_dot else repo, overwrite=True)
    Experiment(cfg).run()
    Experiment(cfg).run()
    Experiment(replace(cfg, overwrite=False)).run()  # the record makes the folder this experiment's now
    _assert_kept(repo, mine)
    assert (repo / "leaderboard.csv").exists() and (repo / "scores" / "noise=0.1_seed0.csv").exists()
    record = _assert_record_matches(repo)
    assert not any(rel in record["files"] for rel in mine)
    _no_debris(repo)


@pytest.mark.parametrize("layout", ["store-inside-out", "out-is-store", "out-inside-store", "via-symlink",
                                    "default-store-inside-out"])
def test_out_overlapping_the_store_is_refused_before_training(make_config, tmp_path, monkeypatch, layout) -> None:
    """A store inside --out was deleted on the second run; --out equal to the store on the third."""
    out, store = tmp_path / "out", tmp_path / "out" / "store"
    if layout == "out-is-store":
        store = out
    elif layout == "out-inside-store":
        store, out = tmp_path / "store", tmp_path / "store" / "results"
    elif layout == "via-symlink":
        store = tmp_path / "store"
        store.mkdir()
        (tmp_path / "link").symlink_to(store)
        out = tmp_path / "link" / "results"
    elif layout == "default-store-inside-out":
        monkeypatch.setenv("MEMPROX_CACHE", str(out / "cache"))
        store = None
    with pytest.raises(HarnessError, match="the run store"):
        Experiment(make_config(epochs=1, out=out, store=store))
    assert not list(tmp_path.rglob("leaderboard.csv")) and not list(tmp_path.rglob("runs"))


def test_out_containing_the_store_is_one_error_line_from_the_cli(tmp_path, capsys) -> None:
    argv = ["run", "--no-progress", "--seeds", "1", "--noise-rates", "0.1", "--tasks", "mislabeled", "--proxies",
            "csl", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--store", str(tmp_path / "store")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "contains the run store" in err[0]


def test_a_users_file_in_the_output_folder_survives_reruns(make_config) -> None:
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    (cfg.out / "my_notes.md").write_text("mine")
    (cfg.out / "scores" / "by_hand.csv").write_text("x")
    (cfg.out / "extra").mkdir()
    Experiment(cfg).run()
    assert (cfg.out / "my_notes.md").read_text() == "mine" and (cfg.out / "scores" / "by_hand.csv").read_text() == "x"
    assert (cfg.out / "extra").is_dir()


def test_files_kept_by_overwrite_survive_the_next_run(make_config) -> None:
    cfg = make_config(epochs=1)
    cfg.out.mkdir(parents=True)
    (cfg.out / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="--overwrite"):
        Experiment(cfg)
    Experiment(replace(cfg, overwrite=True)).run()
    Experiment(cfg).run()  # no --overwrite needed: the folder's record says it is this experiment's
    assert (cfg.out / "notes.txt").read_text() == "mine"
    _assert_record_matches(cfg.out)


def test_an_output_the_user_changed_needs_overwrite(make_config) -> None:
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    (cfg.out / "leaderboard.md").write_text("my edits")
    with pytest.raises(HarnessError, match="leaderboard.md was changed"):
        Experiment(cfg)
    assert (cfg.out / "leaderboard.md").read_text() == "my edits"
    Experiment(replace(cfg, overwrite=True)).run()
    assert (cfg.out / "leaderboard.md").read_text() != "my edits"


def test_only_recorded_unchanged_files_are_removed(make_config) -> None:
    """A stale output of ours goes; a recorded file the user has changed since, and a record entry
    pointing outside the folder, are not ours any more."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    record = json.loads((cfg.out / RECORD).read_text())
    (cfg.out / "scores" / "stale.csv").write_text("old output")
    (cfg.out / "scores" / "edited.csv").write_text("edited by the user")
    record["files"]["scores/stale.csv"] = hashlib.sha256(b"old output").hexdigest()
    record["files"]["scores/edited.csv"] = hashlib.sha256(b"as memprox wrote it").hexdigest()
    (cfg.out / RECORD).write_text(json.dumps(record))
    Experiment(replace(cfg, overwrite=True)).run()
    assert not (cfg.out / "scores" / "stale.csv").exists()
    assert (cfg.out / "scores" / "edited.csv").read_text() == "edited by the user"


@pytest.mark.parametrize("entry", ["../victim.txt", ".git/HEAD", "/victim.txt", "README.md/../../victim.txt"])
def test_a_record_that_names_anything_outside_its_outputs_is_not_trusted(make_config, tmp_path, entry) -> None:
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (cfg.out / ".git").mkdir()
    (cfg.out / ".git" / "HEAD").write_text("precious")
    record = json.loads((cfg.out / RECORD).read_text())
    record["files"][entry] = hashlib.sha256(b"precious").hexdigest()
    (cfg.out / RECORD).write_text(json.dumps(record))
    with pytest.raises(HarnessError, match="--overwrite"):  # an untrusted record proves nothing is ours
        Experiment(cfg)
    Experiment(replace(cfg, overwrite=True)).run()
    assert victim.read_text() == "precious" and (cfg.out / ".git" / "HEAD").read_text() == "precious"


def test_out_through_a_symlink_writes_into_its_target(make_config, tmp_path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    cfg = make_config(epochs=1, out=link)
    Experiment(cfg).run()
    (target / "my_notes.md").write_text("mine")
    Experiment(cfg).run()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "leaderboard.csv").exists() and (target / "my_notes.md").read_text() == "mine"


def test_out_that_is_a_file_is_refused(make_config, tmp_path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(HarnessError, match="is a file"):
        Experiment(make_config(epochs=1))
    assert (tmp_path / "out").read_text() == "a file"


# --- failures part-way: the old outputs come back -------------------------------------------------------------


def _prepare(out: Path, identity: str, files: dict[str, str]):
    """A staging folder for `out` holding `files` and their record (a context manager)."""
    staging = make_staging(out)
    tmp = staging.__enter__()
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    write_record(tmp, identity)
    return staging, tmp


OLD = {"leaderboard.csv": "old board", "summary.json": "{}", "scores/a.csv": "old a", "scores/gone.csv": "old gone"}
NEW = {"leaderboard.csv": "new board", "summary.json": "{}", "scores/a.csv": "new a", "figures/f.png": "new fig"}


@pytest.fixture
def published(tmp_path) -> Path:
    """An output folder with OLD published by experiment "e1" and the user's files beside them."""
    out = tmp_path / "out"
    staging, tmp = _prepare(out, "e1", OLD)
    publish(tmp, out, "e1", overwrite=False)
    staging.__exit__(None, None, None)
    _user_files(out)
    return out


def _renames_of_a_publish(out: Path) -> int:
    """How many renames (os.rename and os.replace) a publish of NEW into a copy of `out` makes."""
    calls = []
    real_rename, real_replace = os.rename, os.replace

    def counting(real):
        return lambda *a, **k: (calls.append(a), real(*a, **k))[1]

    staging, tmp = _prepare(out, "e1", NEW)
    os.rename, os.replace = counting(real_rename), counting(real_replace)
    try:
        publish(tmp, out, "e1", overwrite=False)
    finally:
        os.rename, os.replace = real_rename, real_replace
        staging.__exit__(None, None, None)
    return len(calls)


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_a_failure_at_any_rename_of_a_publish_rolls_back(published, tmp_path, monkeypatch, error) -> None:
    probe = tmp_path / "probe" / "out"
    shutil.copytree(published, probe, symlinks=True)
    total = _renames_of_a_publish(probe)
    assert total >= len(OLD) + len(NEW)
    before = _tree(published)
    for fail_at in range(1, total + 1):
        staging, tmp = _prepare(published, "e1", NEW)
        _raise_at_rename(monkeypatch, fail_at, error)
        try:
            with pytest.raises(type(error)):
                publish(tmp, published, "e1", overwrite=False)
        finally:
            monkeypatch.undo()
            staging.__exit__(None, None, None)
        assert _tree(published) == before, f"failure at rename {fail_at} of {total}"
        _no_debris(published)
    staging, tmp = _prepare(published, "e1", NEW)
    publish(tmp, published, "e1", overwrite=False)
    staging.__exit__(None, None, None)
    assert not (published / "scores" / "gone.csv").exists() and (published / "figures" / "f.png").exists()
    _assert_kept(published, USER_FILES)
    _assert_record_matches(published)
    _no_debris(published)


def _raise_at_rename(monkeypatch, n: int, error: BaseException) -> None:
    """os.rename and os.replace, counted together, raise `error` at the n-th call of either."""
    calls = [0]

    def counting(real):
        def rename(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise error
            return real(*args, **kwargs)
        return rename

    monkeypatch.setattr(os, "rename", counting(os.rename))
    monkeypatch.setattr(os, "replace", counting(os.replace))


class Killed(BaseException):
    """A kill -9 as far as the swap can tell: nothing after it runs (rollback is switched off)."""


def test_a_kill_part_way_is_rolled_back_or_finished_by_the_next_process(published, tmp_path, monkeypatch) -> None:
    """A kill leaves files set aside; the next process to look at --out settles the swap from its
    journal: back to the old outputs before the commit, on to the new ones after it."""
    before, dead = _tree(published), _dead_pid()
    total = 2 + len(OLD) + len(NEW)  # the journal, outgoing and incoming files, the record
    for kill_at in range(2, total + 1):
        staging, tmp = _prepare(published, "e1", NEW)
        _raise_at_rename(monkeypatch, kill_at, Killed())
        monkeypatch.setattr(file_swap, "roll_back", lambda aside, journal: False)  # a kill rolls nothing back
        try:
            with pytest.raises(Killed):
                publish(tmp, published, "e1", overwrite=False)
        finally:
            monkeypatch.undo()
            staging.__exit__(None, None, None)
        (aside,) = [p for p in published.parent.iterdir() if p.name.startswith(".out.old-")]
        aside.rename(aside.with_name(f".out.old-{dead}-x{kill_at}"))  # as if its process had died
        clean_stale(published)
        _no_debris(published)
        assert _tree(published) == before, f"kill at rename {kill_at} of {total}"
    staging, tmp = _prepare(published, "e1", NEW)  # a kill after the commit: the swap is finished
    monkeypatch.setattr(file_swap, "_finish", lambda aside, journal: (_ for _ in ()).throw(Killed()))
    try:
        with pytest.raises(Killed):
            publish(tmp, published, "e1", overwrite=False)
    finally:
        monkeypatch.undo()
        staging.__exit__(None, None, None)
    (aside,) = [p for p in published.parent.iterdir() if p.name.startswith(".out.old-")]
    aside.rename(aside.with_name(f".out.old-{dead}-done"))
    clean_stale(published)
    _no_debris(published)
    assert not (published / "scores" / "gone.csv").exists()
    assert (published / "figures" / "f.png").read_text() == "new fig"
    _assert_record_matches(published)
    _assert_kept(published, USER_FILES)


def test_stale_folders_are_removed_only_when_provably_ours(tmp_path) -> None:
    out, dead = tmp_path / "out", _dead_pid()
    out.mkdir()
    lookalikes = [tmp_path / f".out.tmp-{dead}-abc", tmp_path / f".out.old-{dead}-abc"]
    for folder in lookalikes:  # the name pattern alone, without the marker memprox writes on creation
        folder.mkdir()
        (folder / "thesis.tex").write_text("precious")
    ours = tmp_path / f".out.tmp-{dead}-def"
    ours.mkdir()
    (ours / STAGING_MARKER).write_text("")
    (ours / "leaderboard.csv").write_text("half")
    alive = tmp_path / f".out.tmp-{os.getpid()}-ghi"
    alive.mkdir()
    (alive / STAGING_MARKER).write_text("")
    clean_stale(out)
    assert not ours.exists() and alive.exists()
    for folder in lookalikes:
        assert (folder / "thesis.tex").read_text() == "precious"


def test_a_failed_write_after_training_names_the_path_and_keeps_runs_and_old_outputs(make_config,
                                                                                      monkeypatch) -> None:
    """A folder that turned read-only during training (simulated: root ignores permissions)."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    (cfg.out / "my_notes.md").write_text("mine")
    before = _tree(cfg.out)
    real_rename = os.rename

    def read_only(src, dst, *args, **kwargs):
        if str(cfg.out) in (os.path.dirname(src), os.path.dirname(dst)):
            raise PermissionError(13, "Permission denied", str(src))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", read_only)
    exp = Experiment(replace(cfg, overwrite=True))
    with pytest.raises(StorageError, match=re.escape(str(cfg.out)) + ".*Permission denied.*every run is kept"):
        exp.run()
    monkeypatch.undo()
    assert _tree(cfg.out) == before
    _no_debris(cfg.out)
    assert all(exp.store.get(spec) is not None for spec in exp.plan.runs)


def test_ctrl_c_while_publishing_keeps_the_old_outputs(make_config, monkeypatch) -> None:
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    before = _tree(cfg.out)
    real_rename, calls = os.rename, [0]

    def interrupted(*args, **kwargs):
        if str(cfg.out) in str(args[0]):  # the third move of a file out of --out
            calls[0] += 1
            if calls[0] == 3:
                raise KeyboardInterrupt
        return real_rename(*args, **kwargs)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(Interrupted):
        Experiment(cfg).run()
    monkeypatch.undo()
    assert _tree(cfg.out) == before
    _no_debris(cfg.out)


def test_ctrl_c_is_held_until_a_rollback_is_over() -> None:
    done, handler = [], signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with io.interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is handler


# --- two experiments publishing into one folder ------------------------------------------------------------


@pytest.mark.parametrize("second", ["e1", "e2"], ids=["same-experiment", "other-experiment"])
def test_concurrent_publishes_into_one_folder_are_serialised(published, monkeypatch, second) -> None:
    """While one process swaps its outputs in, a second waits for the folder's lock; then it replaces
    them (same experiment) or is refused (another experiment, no --overwrite). Either way the record
    matches the files, and the user's files stay."""
    first_in, release, real_rename = threading.Event(), threading.Event(), os.rename
    publishing = threading.Event()  # the first thread's staging folder is made (its probe renames too)

    def slow_in_first(*args, **kwargs):
        if threading.current_thread().name == "first" and publishing.is_set() and not first_in.is_set():
            first_in.set()
            release.wait(10)
        return real_rename(*args, **kwargs)

    monkeypatch.setattr(os, "rename", slow_in_first)
    outcomes: dict[str, object] = {}

    def publish_one(name: str, identity: str, files: dict[str, str]) -> None:
        staging, tmp = _prepare(published, identity, files)
        if name == "first":
            publishing.set()
        try:
            publish(tmp, published, identity, overwrite=False)
            outcomes[name] = "ok"
        except StorageError as e:
            outcomes[name] = e
        finally:
            staging.__exit__(None, None, None)

    first = threading.Thread(target=publish_one, args=("first", "e1", NEW), name="first")
    first.start()
    assert first_in.wait(10)
    other = threading.Thread(target=publish_one, args=("second", second, {"leaderboard.csv": "second board"}))
    other.start()
    other.join(0.5)
    assert other.is_alive(), "the second publish did not wait for the first"
    release.set()
    first.join(10)
    other.join(10)
    assert outcomes["first"] == "ok"
    record = _assert_record_matches(published)
    if second == "e1":
        assert outcomes["second"] == "ok" and (published / "leaderboard.csv").read_text() == "second board"
        assert list(record["files"]) == ["leaderboard.csv"]
    else:
        assert "another experiment" in str(outcomes["second"])
        assert record["experiment"] == "e1" and sorted(record["files"]) == sorted(NEW)
    _assert_kept(published, USER_FILES)
    _no_debris(published)


def test_check_out_reads_the_record_not_the_summary(tmp_path) -> None:
    """summary.json is not proof of ownership: a folder of unverifiable files needs --overwrite."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"experiment": "e1"}))
    with pytest.raises(HarnessError, match="--overwrite"):
        check_out(out, "e1", overwrite=False, store=tmp_path / "store")
