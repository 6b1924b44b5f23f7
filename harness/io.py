"""File system primitives, shared by the run store and the output folder. Atomic file writes: a
reader (or a crash) never sees half a leaderboard. Folders: the umask, a write probe, the free-space
check, a new folder beside another (same file system, so renames are atomic), swapping a whole
folder into place with rollback, and finding the leftovers of killed processes. Swapping a set of
files into a folder with rollback: the old files are set aside, not deleted, until the new set is
committed, so an error, Ctrl-C or kill part-way leaves (or gets back) the old set.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file over `path`. The file gets the mode the
    umask gives a new file (mkstemp makes 0600 files), as every other file memprox writes does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~umask())
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (store checksums, dataset fingerprints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def failure_reason(e: BaseException) -> str:
    """One line saying why a read failed (OSError's strerror, else the exception's first line)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


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


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock named `path` between processes. The lock file is removed on release,
    so none is left beside a user's folder; a waiter that then wakes holding the removed file
    (its inode no longer at `path`) tries again on the new one. Ctrl-C stops the wait."""
    if fcntl is None:  # no flock (Windows): a plain file lock, whose file stays
        with FileLock(path):
            yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        with suppress(OSError):
            os.unlink(path)
        os.close(fd)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C until the block is over, then raise it: a rollback stopped half-way would leave
    files set aside. Only the main thread receives signals, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if caught:
            raise KeyboardInterrupt


# --- folders: umask, write probe, free space, new folders, whole-folder swaps, leftovers ----------------

#: Refuse to start when the store's or the outputs' file system has less room than this.
MIN_FREE_BYTES = 64 * 2**20


def umask() -> int:
    """The process's umask, read from /proc where it can be: setting it to read it (the fallback,
    0o077 meanwhile) would change the mode of files other threads create at that moment."""
    with suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def probe_writable(folder: Path, into: Path | None = None) -> None:
    """OSError when no file can be created in `folder` (read-only, another user's, missing), or,
    with `into`, cannot be renamed from there into the folder `into` (EXDEV: another file system,
    such as a mount point or a bind mount, even where st_dev is the same)."""
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    os.close(fd)
    try:
        if into is not None:
            os.rename(probe, into / Path(probe).name)
            probe = str(into / Path(probe).name)
    finally:
        os.unlink(probe)


def free_bytes_short(folder: Path) -> int | None:
    """The free bytes of `folder`'s file system when fewer than MIN_FREE_BYTES, else None."""
    free = shutil.disk_usage(folder).free
    return free if free < MIN_FREE_BYTES else None


def folder_beside(parent: Path, prefix: str) -> Path:
    """A new empty folder `parent/PREFIX<random>`, with the permissions the umask gives (mkdtemp
    makes 0700 folders: the umask decides who may read what is published from it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        os.chmod(path, 0o777 & ~umask())
    except BaseException:
        rmtree(path)
        raise
    return path


def rmtree(path: Path) -> None:
    """Remove a folder (or file), making read-only parts writable first; leave what cannot be removed."""

    def writable_then_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=writable_then_retry)
    else:
        path.unlink(missing_ok=True)


def swap_folder(new: Path, final: Path, aside: Path) -> None:
    """Move the complete folder `new` to `final`. Whatever is at `final` is renamed to `aside`
    first and removed only once `new` is in; if moving `new` in fails, it is put back. A remnant of
    `aside` that cannot be removed (another user's files) is for the caller's leftover cleanup."""
    if not os.path.lexists(final):
        os.rename(new, final)
        return
    os.rename(final, aside)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(aside, final)  # put the old one back
        raise
    rmtree(aside)


def leftovers(parent: Path, pattern: re.Pattern[str], owned: Callable[[re.Match[str], Path], bool]
              ) -> list[tuple[re.Match[str], Path]]:
    """Real folders in `parent` that killed processes left: their name matches `pattern` and
    `owned(match, path)` proves them ours (a dead owner, a marker written inside on creation, ...).
    A link, a file, or a folder that merely has the name is never listed."""
    found = []
    if not parent.is_dir():
        return found
    for p in sorted(parent.iterdir()):
        m = pattern.match(p.name)
        if m is not None and not p.is_symlink() and p.is_dir() and owned(m, p):
            found.append((m, p))
    return found


# --- paths inside a folder, never through a link -------------------------------------------------------


def is_plain_relpath(rel: object) -> bool:
    """A relative path of ordinary names only: not absolute, no `.` or `..`, no hidden part. A record
    or journal naming anything else (`../x`, `.git/config`, `/etc`) is not trusted."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    return all(part and part not in (".", "..") and not part.startswith(".") for part in rel.split("/"))


def plain_file(root: Path, rel: str) -> Path | None:
    """`root/rel` when it is a regular file reached through real folders only, else None: a link on
    the way could lead out of `root`, to a file that is not the one recorded."""
    path, parts = root, rel.split("/")
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
            return None
    return path


def blocked_by(root: Path, rel: str) -> Path | None:
    """The first folder on the way to `root/rel` that exists but is not a real folder (a file or a
    link), so `rel` cannot be placed without removing it; None when the way is clear."""
    path = root
    for part in rel.split("/")[:-1]:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return path
    return None


def regular_files(root: Path, skip: Collection[str] = ()) -> list[str]:
    """Relative POSIX paths of the regular files under `root`, sorted; links are neither listed nor
    followed."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel not in skip and stat.S_ISREG(os.lstat(path).st_mode):
                found.append(rel)
    return sorted(found)


# --- swapping a set of files into a folder, with rollback ------------------------------------------------

#: Written first into the folder of set-aside files: what the swap moves, so that a kill part-way is
#: rolled back (or finished) by the next process that finds the folder.
JOURNAL = ".memprox-journal.json"


def swap_files(src: Path, dst: Path, incoming: dict[str, str], outgoing: list[str], aside: Path,
               commit: str) -> None:
    """Swap a set of files into the folder `dst`. The `outgoing` files of `dst` (those replaced, and
    stale ones) move into `aside` (an empty folder of the caller's beside `dst`), the `incoming`
    files of `src` (relative path -> SHA-256) move in, and renaming `src/commit` over `dst/commit`
    (atomic) commits the new set. Any error or Ctrl-C before the commit puts every file back and is
    raised again; after it `aside` is deleted. Files of `dst` not named stay untouched, and a folder
    is removed only when empty."""
    journal = {"dst": str(dst), "incoming": incoming, "outgoing": outgoing,
               "folders": _missing_folders(dst, incoming), "commit": [commit, file_sha256(src / commit)]}
    try:
        atomic_write_text(aside / JOURNAL, json.dumps(journal))
    except BaseException:
        shutil.rmtree(aside, ignore_errors=True)  # nothing was moved yet
        raise
    try:
        for rel in outgoing:
            _move(dst / rel, aside / rel)
        for rel in incoming:
            _move(src / rel, dst / rel)
        os.replace(src / commit, dst / commit)
    except BaseException:
        with interrupts_held():
            if roll_back(aside, journal):  # else the next process to find `aside` tries again
                shutil.rmtree(aside, ignore_errors=True)
        raise
    _finish(aside, journal)


def roll_back(aside: Path, journal: dict) -> bool:
    """Undo an uncommitted swap from its journal and the files' state, so it also works after a
    kill: remove the incoming files it placed (known by their checksums), put the set-aside files
    back, remove the folders it made if they are empty. True when every set-aside file is back."""
    dst, outgoing = Path(journal["dst"]), set(journal["outgoing"])
    for rel, sha in journal["incoming"].items():
        if rel in outgoing and not os.path.lexists(aside / rel):
            continue  # the old file was never set aside: what is there is the old file
        placed = plain_file(dst, rel)
        with suppress(OSError):
            if placed is not None and file_sha256(placed) == sha:
                placed.unlink()
    for rel in journal["outgoing"]:
        with suppress(OSError):
            if os.path.lexists(aside / rel) and not os.path.lexists(dst / rel):
                _move(aside / rel, dst / rel)
    for folder in sorted(journal["folders"], key=len, reverse=True):
        with suppress(OSError):
            (dst / folder).rmdir()
    return not any(os.path.lexists(aside / rel) for rel in outgoing)


def recover_swap(aside: Path, dst: Path) -> None:
    """Settle a swap into `dst` that a killed process left in `aside`: finish it if it was
    committed, else roll it back. A folder without a well-formed journal for `dst` is left alone:
    nothing proves it is ours."""
    journal = _read_journal(aside)
    if journal is None or journal["dst"] != str(dst):
        return
    commit, sha = journal["commit"]
    done = plain_file(dst, commit)
    if done is not None and file_sha256(done) == sha:
        _finish(aside, journal)
    elif roll_back(aside, journal):
        shutil.rmtree(aside, ignore_errors=True)


def _finish(aside: Path, journal: dict) -> None:
    """After the commit: drop the set-aside files, and folders of `dst` they leave empty."""
    dst = Path(journal["dst"])
    for rel in journal["outgoing"]:
        folder = (dst / rel).parent
        with suppress(OSError):
            while folder != dst and not os.listdir(folder):
                folder.rmdir()
                folder = folder.parent
    shutil.rmtree(aside, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """Rename `source` to `target`, making its folders; never over something already there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "something is in the way", str(target))
    os.rename(source, target)


def _missing_folders(dst: Path, files: Collection[str]) -> list[str]:
    """Folders (relative to `dst`) that placing `files` creates."""
    missing = set()
    for rel in files:
        for parent in PurePosixPath(rel).parents:
            if str(parent) != "." and not os.path.lexists(dst / parent):
                missing.add(str(parent))
    return sorted(missing)


def _read_journal(aside: Path) -> dict | None:
    path = plain_file(aside, JOURNAL)
    try:
        journal = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(journal, dict) or not isinstance(journal.get("dst"), str):
        return None
    incoming, outgoing = journal.get("incoming"), journal.get("outgoing")
    folders, commit = journal.get("folders"), journal.get("commit")
    shapes = (isinstance(incoming, dict) and all(isinstance(v, str) for v in incoming.values())
              and isinstance(outgoing, list) and isinstance(folders, list) and isinstance(commit, list)
              and len(commit) == 2 and all(isinstance(c, str) for c in commit)
              and is_plain_relpath(commit[0].lstrip(".")))  # the commit file is one name, may be hidden
    rels = [*incoming, *outgoing, *folders] if shapes else [None]
    return journal if all(is_plain_relpath(r) for r in rels) else None
