"""Whether a Ray job's node sees the run store, checked rather than guessed (see `harness.executors.ray`).

In-run checkpoints (`--checkpoint-every`) go to the store's `partial/`. A job on another node may see
that very folder (a file system every node mounts at the same path), another folder at the same path
(its own disk: checkpoints written there are never cleared, never counted, and a later run placed on
that node would resume from one), or nothing. The IP addresses of the nodes cannot tell these apart,
so the driver writes a probe into `partial/` for the run (`StoreProbe`): a file named after a random
token that holds that token, written atomically, removed when the run ends. Each job, on its node and
before it reads or writes a checkpoint, looks for the probe at that exact path (`sees_probe`); a job
that does not find it there, holding its token, runs without checkpoints.

A probe left by a killed driver names another token, so no later run takes it for its own; the next
driver on the same host removes it (its process gone, its lock free). A probe that cannot be written
(a read-only store, a full disk) leaves the run without checkpoints, said once.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import stat
import sys
from contextlib import suppress
from pathlib import Path

from harness.io import atomic_write, open_to_lock, pid_alive

try:
    import fcntl
except ImportError:  # Windows: no lock; a probe is then removed only when its process is gone
    fcntl = None  # type: ignore[assignment]

#: The probe's name in the store's `partial/`: `.ray-probe-<32 hex digits>` (`store info`/`prune`
#: can tell it by this name; its contents are the token, the driver's host and its process id).
PREFIX = ".ray-probe-"
NAME = re.compile(r"\.ray-probe-([0-9a-f]{32})")
#: The most a probe's contents take (a host name is at most 255 bytes).
MAX_BYTES = 512


def probe_path(root: str | Path, token: str) -> Path:
    """Where the probe of the run with `token` lies in the store at `root`: beside the checkpoints."""
    return Path(root) / "partial" / f"{PREFIX}{token}"


def sees_probe(root: str | Path, token: str) -> bool:
    """The job's side: whether the probe at its exact path holds `token`, i.e. this node sees the
    folder the driver wrote it into. Anything else (no such file, another disk, a folder, a file
    that cannot be read) is False: the job then neither reads nor writes a checkpoint."""
    try:
        with open(probe_path(root, token), "rb") as f:
            first = f.read(MAX_BYTES).split(b"\n", 1)[0]
    except OSError:
        return False
    return first == token.encode()


class StoreProbe:
    """The driver's side: the probes of one run, one per store its jobs checkpoint into."""

    def __init__(self, roots: set[str]) -> None:
        self.token = secrets.token_hex(16)
        self.placed: dict[Path, int | None] = {}  # probe -> its open, locked descriptor (None: no lock)
        for root in sorted(roots):
            self._place(root)

    @property
    def live(self) -> str | None:
        """The token jobs check, or None when no probe could be written: no job then checkpoints."""
        return self.token if self.placed else None

    def _place(self, root: str) -> None:
        path = probe_path(root, self.token)
        remove_dead_probes(path.parent)
        locked: list[int | None] = []  # locked before the rename: a cleaner never sees it named and free

        def write(tmp: Path) -> None:
            tmp.write_text(f"{self.token}\n{socket.gethostname()}\n{os.getpid()}\n", encoding="utf-8")
            locked.append(_lock(tmp))

        try:
            if not path.parent.is_dir():  # made with the store: a store path that is not one gets no folder
                raise FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent))
            atomic_write(path, write)
        except OSError as e:
            for fd in locked:
                if fd is not None:
                    os.close(fd)
            print(f"warning: cannot write {path} ({e.strerror or e}), the file that tells Ray's jobs they see "
                  "the run store: this run's jobs write no in-run checkpoints (a killed run restarts from its "
                  "first epoch); make the store's partial/ writable", file=sys.stderr)
            return
        self.placed[path] = locked[0]

    def remove(self) -> None:
        """Remove this run's probes: a job that starts later (one the run left behind) checkpoints no more."""
        for path, fd in self.placed.items():
            with suppress(OSError):
                path.unlink()
            if fd is not None:
                os.close(fd)
        self.placed = {}


def _lock(path: Path) -> int | None:
    """Hold a shared lock on the probe while the run lasts: a cleaner never takes a live one, even
    from a process it cannot see (another PID namespace on this host). Taken on the temporary file
    (the lock goes with it through the rename): taken after it, a cleaner in another PID namespace
    could find the probe named, its process gone by its id and its lock free, and remove it."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    with suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def remove_dead_probes(partial: Path, dry_run: bool = False) -> list[str]:
    """Remove the probes killed drivers on this host left in `partial/`: only a small plain file of
    the probe's name whose contents name this host and a process that is gone, and whose lock is free.
    A probe of another host is left (its process cannot be checked from here); so is a linked partial/
    (not the store's to clean). Returns the names removed (`dry_run`: that would be, none removed)."""
    removed: list[str] = []
    if partial.is_symlink():
        return removed
    try:
        names = [e.name for e in os.scandir(partial) if NAME.fullmatch(e.name)]
    except OSError:
        return removed
    for name in names:
        path = partial / name
        with suppress(OSError, ValueError):
            fd = open_to_lock(path)
            try:
                if _dead_probe(fd, name[len(PREFIX):]):
                    if not dry_run:
                        path.unlink()
                    removed.append(name)
            finally:
                os.close(fd)
    return removed


def _dead_probe(fd: int, token: str) -> bool:
    """Whether the open probe `fd` of `token` is a dead driver's of this host (ValueError: not a probe)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    named, host, pid = os.read(fd, MAX_BYTES).decode("ascii").split("\n")[:3]
    if named != token or host != socket.gethostname() or pid_alive(int(pid)):
        return False
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError (an OSError): a live driver holds it
    return True

