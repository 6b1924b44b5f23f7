"""A killed Ray driver's store probe on NFS, the file system the probe exists for (found by an attack
on a real multi-node cluster).

The next driver (and `store prune --leftovers`) removes a probe whose process is gone, once it gets
an exclusive flock on it: a live driver holds a shared one. On NFS, flock is a lock on the server,
and an exclusive one is refused (EBADF) on a file opened for reading only (flock(2), "NFS
details"); the cleaner opened the probe read-only, so on an NFS store no killed driver's probe was
ever removed. The file system is simulated here: a flock that refuses LOCK_EX on a descriptor not
opened for writing, as the NFS client does, and otherwise is the real one.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness.executors import ray_probe
from harness.executors.ray_probe import StoreProbe, probe_path, remove_dead_probes

pytestmark = pytest.mark.skipif(ray_probe.fcntl is None, reason="no flock here")


def _nfs_fcntl() -> types.SimpleNamespace:
    """`fcntl` as a process on an NFS mount sees it: an exclusive flock needs the file open for writing."""
    real = ray_probe.fcntl

    def flock(fd: int, op: int) -> None:
        if op & real.LOCK_EX and real.fcntl(fd, real.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        real.flock(fd, op)

    return types.SimpleNamespace(flock=flock, LOCK_SH=real.LOCK_SH, LOCK_EX=real.LOCK_EX, LOCK_NB=real.LOCK_NB)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _partial(tmp_path: Path) -> Path:
    (tmp_path / "store" / "partial").mkdir(parents=True)
    return tmp_path / "store" / "partial"


def test_a_killed_drivers_probe_on_nfs_is_removed(tmp_path, monkeypatch) -> None:
    partial = _partial(tmp_path)
    dead = probe_path(partial.parent, "a" * 32)
    dead.write_text(f"{'a' * 32}\n{socket.gethostname()}\n{_dead_pid()}\n")
    monkeypatch.setattr(ray_probe, "fcntl", _nfs_fcntl())
    assert remove_dead_probes(partial) == [dead.name]  # before: [], the file left for good
    assert not dead.exists()


def test_the_next_driver_on_nfs_removes_it_and_keeps_a_live_one(tmp_path, monkeypatch) -> None:
    """The next run's probe takes the dead one's place; a live driver's (its lock held, its process id
    from another PID namespace: gone here) stays."""
    partial = _partial(tmp_path)
    monkeypatch.setattr(ray_probe, "fcntl", _nfs_fcntl())
    live = StoreProbe({str(partial.parent)})
    live_path = probe_path(partial.parent, live.token)
    live_path.write_text(f"{live.token}\n{socket.gethostname()}\n{_dead_pid()}\n")  # same file: still locked
    dead = probe_path(partial.parent, "b" * 32)
    dead.write_text(f"{'b' * 32}\n{socket.gethostname()}\n{_dead_pid()}\n")
    rerun = StoreProbe({str(partial.parent)})
    try:
        assert sorted(os.listdir(partial)) == sorted([live_path.name, probe_path(partial.parent, rerun.token).name])
    finally:
        rerun.remove()
        live.remove()
    assert os.listdir(partial) == []


def test_another_users_probe_is_still_checked_where_it_cannot_be_opened_for_writing(tmp_path, monkeypatch) -> None:
    """A file this user may not write (another user's, 0644) is opened for reading, as before: on a
    local file system its lock still tells a live driver from a dead one."""
    partial = _partial(tmp_path)
    dead = probe_path(partial.parent, "c" * 32)
    dead.write_text(f"{'c' * 32}\n{socket.gethostname()}\n{_dead_pid()}\n")
    opened: list[int] = []
    real_open = os.open

    def no_writing(path, flags, *args):  # noqa: ANN001, ANN202  (os.open's own signature)
        if os.fspath(path) == str(dead) and flags & os.O_ACCMODE != os.O_RDONLY:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        opened.append(flags & os.O_ACCMODE)
        return real_open(path, flags, *args)

    monkeypatch.setattr(ray_probe.os, "open", no_writing)
    assert remove_dead_probes(partial) == [dead.name]
    assert opened == [os.O_RDONLY]


def test_the_probe_is_locked_before_it_appears_under_its_name(tmp_path, monkeypatch) -> None:
    """The driver locked its probe after the rename that names it: a cleaner in another PID namespace
    on this host (the driver's id looks gone there) could find it named, unlocked, and remove it
    (this run's jobs then write no checkpoints, without a word)."""
    partial = _partial(tmp_path)
    real = ray_probe.fcntl
    seen: list[str] = []
    real_replace = os.replace

    def replace(src, dst) -> None:  # noqa: ANN001  (os.replace's own signature)
        if ray_probe.NAME.fullmatch(Path(dst).name):
            fd = os.open(src, os.O_RDWR)
            try:
                real.flock(fd, real.LOCK_EX | real.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
            finally:
                os.close(fd)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    probe = StoreProbe({str(partial.parent)})
    monkeypatch.undo()
    try:
        assert seen == ["held"]  # before: ["free"]
        assert ray_probe.sees_probe(partial.parent, probe.token)
        assert remove_dead_probes(partial) == []  # held by this process: kept
    finally:
        probe.remove()
    assert os.listdir(partial) == []
