"""What a killed process leaves in a user's folder, and the proof that it is memprox's to remove.
Every write probe and working folder memprox makes beside a user's files carries its maker's PID (and a
probe its lock), so the next run can tell a dead process's leftover from a live one's, or from a
user's file of the same name, and remove only the first. Kept apart from `harness.io` (which
re-exports these names) because it is one job: making such files provable, and proving them.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (this one included); a process of another user counts as alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: A write probe: `.write-test-PID-RANDOM` (mkstemp's 8 characters), empty, locked (flock) by its
#: process while it exists, so one that a kill left behind is provably ours and dead.
_PROBE = re.compile(r"\.write-test-(\d+)-[a-z0-9_]{8}")


def probe_writable(folder: Path, into: Path | None = None) -> None:
    """OSError when no file can be created in `folder` (read-only, another user's, missing), or,
    with `into`, cannot be renamed from there into the folder `into` (EXDEV: another file system,
    such as a mount point or a bind mount, even where st_dev is the same). The probes that killed
    processes left in these folders are removed first (`remove_dead_probes`)."""
    for place in (folder, into) if into is not None else (folder,):
        remove_dead_probes(place)
    fd, probe = tempfile.mkstemp(prefix=f".write-test-{os.getpid()}-", dir=folder)
    try:
        if fcntl is not None:  # held until closed: a cleaner never takes a live probe (where there is no
            with suppress(OSError):  # flock, as on an NFS mount without locks, no cleaner can take it either)
                fcntl.flock(fd, fcntl.LOCK_EX)
        if into is not None:
            os.rename(probe, into / Path(probe).name)
            probe = str(into / Path(probe).name)
    finally:
        try:
            os.unlink(probe)
        finally:
            os.close(fd)


def open_to_lock(path: str | Path) -> int:
    """`path` opened for an exclusive flock: for writing where allowed, since NFS grants an exclusive
    lock only on a file open for writing (flock(2)), and a read-only open there left every dead probe
    in place; read-only where writing is refused (a lock there still works on a local disk)."""
    flags = os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, os.O_RDWR | flags)
    except PermissionError:
        return os.open(path, os.O_RDONLY | flags)


def remove_dead_probes(folder: Path) -> list[str]:
    """Remove the write probes (`_PROBE`) a kill left in `folder`: only an empty regular file of that
    name whose process is gone and whose lock is free (a process in another PID namespace, such as
    a container sharing the volume, may show a live PID as dead). A user's file is never one: any
    other name, a link, a folder or a file with content stays. Returns the names removed."""
    removed: list[str] = []
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(".write-test-")]
    except OSError:
        return removed
    for name in names:
        m = _PROBE.fullmatch(name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        path = os.path.join(folder, name)
        try:  # a regular file before it is opened: opening a FIFO or a device named so would act on it
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            fd = open_to_lock(path)
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live probe
            held, now = os.fstat(fd), os.lstat(path)
            same = (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)  # not swapped since it was opened
            if stat.S_ISREG(held.st_mode) and held.st_size == 0 and same:
                os.unlink(path)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def killed_as_made(folder: Path, m: re.Match[str], inside: str) -> bool:
    """Whether `folder` was left by a process killed as it made it: its name (matched by `m` up to
    mkdtemp's random part, group 2 the PID) is exactly as made, its PID is gone, and it holds nothing,
    or nothing but a regular file `inside` (made first). False when it cannot be listed."""
    if not re.fullmatch(r"[a-z0-9_]{8}", folder.name[m.end():]) or pid_alive(int(m.group(2))):
        return False
    try:
        return all(p.name == inside and not p.is_symlink() and p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def leftovers(parent: Path, pattern: re.Pattern[str], owned: Callable[[re.Match[str], Path], bool]
              ) -> list[tuple[re.Match[str], Path]]:
    """Real folders in `parent` that killed processes left: their name matches `pattern` and
    `owned(match, path)` proves them ours (a dead owner, a marker written inside on creation, ...).
    A link, a file, or a folder that merely has the name is never listed."""
    found: list[tuple[re.Match[str], Path]] = []
    if not parent.is_dir():
        return found
    for p in sorted(parent.iterdir()):
        m = pattern.match(p.name)
        if m is not None and not p.is_symlink() and p.is_dir() and owned(m, p):
            found.append((m, p))
    return found
