"""Review 5 of interruption, concurrency and files: what kills leave behind (write probes, staging
folders made but not yet marked), a read-only store of finished runs, and reruns after interruptions."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

import harness.io as hio
import harness.jobs as jobs
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.outputs import STAGING_LOCK, check_out
from harness.store import RunStore

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_ROOT = str(Path(__file__).resolve().parents[1])


def _killed(code: str, *args: str) -> None:
    """Run `code` in a fresh interpreter that kills itself (os._exit) where the code says."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=False, timeout=120)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# --- (a) leftovers of kills: write probes and staging folders, removed only when provably ours and dead ------


_KILL_AT_PROBE_UNLINK = """
import os, sys
from pathlib import Path
import harness.io as hio
os.unlink = lambda path: os._exit(9)
hio.probe_writable(Path(sys.argv[1]))
"""


def test_a_write_probe_left_by_a_kill_is_removed_by_the_next_probe(tmp_path) -> None:
    _killed(_KILL_AT_PROBE_UNLINK, str(tmp_path))
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".write-test-")
    dead = _dead_pid()
    users = {f".write-test-{dead}-abcdefgh": "notes", ".write-test-abcdefgh": "", "write-test-1-abcdefgh": ""}
    for name, text in users.items():  # content, no PID, not hidden: never a probe of ours
        (tmp_path / name).write_text(text)
    (tmp_path / f".write-test-{dead}-linkxxxx").symlink_to(tmp_path / ".write-test-abcdefgh")
    hio.probe_writable(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*users, f".write-test-{dead}-linkxxxx"])


@pytest.mark.skipif(fcntl is None, reason="flock")
def test_a_probe_whose_pid_looks_dead_but_whose_lock_is_held_stays(tmp_path) -> None:
    """A process in another PID namespace (a container on the same volume) may show a live PID as dead."""
    probe = tmp_path / f".write-test-{_dead_pid()}-abcdefgh"
    probe.touch()
    fd = os.open(probe, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert hio.remove_dead_probes(tmp_path) == [] and probe.exists()
    finally:
        os.close(fd)
    assert hio.remove_dead_probes(tmp_path) == [probe.name] and not probe.exists()


def test_probes_killed_in_the_store_and_beside_out_are_gone_after_the_next_checks(tmp_path) -> None:
    store, out = RunStore(tmp_path / "store"), tmp_path / "parent" / "out"
    out.mkdir(parents=True)
    for folder in (store.root / "runs", store.root / "partial", out.parent, out):
        _killed(_KILL_AT_PROBE_UNLINK, str(folder))
    assert len(list(tmp_path.rglob(".write-test-*"))) == 4
    store.check_writable()
    check_out(out, "id", False, store.root)
    assert list(tmp_path.rglob(".write-test-*")) == []


_KILL_IN_STAGING = """
import os, sys
from pathlib import Path
import filelock
import harness.outputs as outputs
real = filelock.FileLock.acquire
def acquire(self, *a, **k):
    if sys.argv[2] == "holding":
        real(self, *a, **k)
    os._exit(9)
filelock.FileLock.acquire = acquire
with outputs.staging(Path(sys.argv[1])):
    pass
"""


def test_a_staging_folder_killed_before_its_marker_is_removed_by_the_next_run(tmp_path) -> None:
    out = tmp_path / "out"
    _killed(_KILL_IN_STAGING, str(out), "before the lock")  # an empty folder
    _killed(_KILL_IN_STAGING, str(out), "holding")  # its lock file only
    left = sorted(tmp_path.iterdir())
    assert len(left) == 2 and sorted(len(list(p.iterdir())) for p in left) == [0, 1]
    live = tmp_path / f".out.tmp-{os.getpid()}-abcdefgh"  # a live process's, just made
    live.mkdir()
    users = tmp_path / f".out.tmp-{_dead_pid()}-abcdefgh"  # a user's folder of that name
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    lookalike = tmp_path / f".out.tmp-{_dead_pid()}-yy"  # not a name mkdtemp makes
    lookalike.mkdir()
    check_out(out, "id", False, tmp_path / "store")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, users.name, lookalike.name])
    assert (users / "notes.txt").read_text() == "mine"


def test_an_unmarked_staging_folder_whose_lock_is_held_stays(tmp_path) -> None:
    from filelock import FileLock

    folder = tmp_path / f".out.tmp-{_dead_pid()}-abcdefgh"
    folder.mkdir()
    with FileLock(folder / STAGING_LOCK):
        check_out(tmp_path / "out", "id", False, tmp_path / "store")
        assert folder.is_dir()


# --- (b) a read-only store: read when every run is stored, refused before training otherwise -------------


def _read_only(monkeypatch, folder: Path) -> None:
    """As a read-only file system would (the suite may run as root, which chmod does not stop): every
    call that creates, replaces or removes a path under `folder` fails with EROFS."""
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


def test_a_read_only_store_holding_every_run_is_read(make_config, monkeypatch) -> None:
    cfg = make_config(epochs=2, noise_rates=(0.05, 0.1))
    Experiment(cfg).run()
    before = _tree(cfg.store)
    _read_only(monkeypatch, cfg.store)
    monkeypatch.setattr(jobs, "train_run", lambda *a, **k: pytest.fail("a stored run was trained again"))
    again = make_config(epochs=2, noise_rates=(0.05, 0.1), out=cfg.out.parent / "out2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one line about the store
        result = Experiment(again).run()
    monkeypatch.undo()
    assert result.trained == [] and len(result.reused) == 2
    assert _tree(cfg.store) == before
    for name in ("leaderboard.csv", "raw.csv"):
        assert (again.out / name).read_bytes() == (cfg.out / name).read_bytes()


def test_a_read_only_store_missing_a_run_is_refused_before_training(make_config, monkeypatch) -> None:
    Experiment(make_config(epochs=2, noise_rates=(0.05,))).run()
    cfg = make_config(epochs=2, noise_rates=(0.05, 0.1), out=make_config().out.parent / "out2")
    before = _tree(cfg.store)
    _read_only(monkeypatch, cfg.store)
    trained = []
    monkeypatch.setattr(jobs, "train_run", lambda *a, **k: trained.append(a))
    exp = Experiment(cfg)
    with pytest.raises(HarnessError) as info:
        exp.run()
    monkeypatch.undo()
    message = str(info.value)
    assert trained == [] and "\n" not in message
    assert f"{cfg.store / 'runs'} is not writable (Read-only file system)" in message
    assert "1 run(s) this experiment needs must be trained into it (digits noise=0.1" in message
    assert "pass another --store" in message
    assert _tree(cfg.store) == before and not cfg.out.exists()


def test_a_damaged_entry_of_a_read_only_store_is_refused_not_locked(make_config, monkeypatch) -> None:
    cfg = make_config(epochs=2)
    Experiment(cfg).run()
    npy = sorted((cfg.store / "runs").rglob("*.npy"))[0]
    data = npy.read_bytes()
    npy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    _read_only(monkeypatch, cfg.store)
    with pytest.warns(UserWarning, match="damaged or unverifiable"), pytest.raises(HarnessError, match="not writable"):
        Experiment(make_config(epochs=2, out=cfg.out.parent / "out2")).run()


def test_an_empty_read_only_store_is_still_refused_when_set_up(make_config, monkeypatch) -> None:
    cfg = make_config()
    cfg.store.mkdir()
    _read_only(monkeypatch, cfg.store)
    with pytest.raises(HarnessError, match=f"run store folder {cfg.store / 'runs'} is not writable"):
        Experiment(cfg)
