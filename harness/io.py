"""File system primitives, shared by the run store and the output folder. Atomic file writes: a
reader (or a crash) never sees half a leaderboard. Folders: the umask, a write probe, the free-space
check, a new folder beside another (same file system, so renames are atomic), and swapping a whole
folder into place with rollback. Swapping a set of files into a folder is `harness.file_swap`'s; the
write probe and finding the leftovers of killed processes are `harness.kill_leftovers`'s (its names
are re-exported here, where the store, the outputs and the Ray probe import them).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock

from harness.kill_leftovers import killed_as_made as killed_as_made
from harness.kill_leftovers import leftovers as leftovers
from harness.kill_leftovers import open_to_lock as open_to_lock
from harness.kill_leftovers import pid_alive as pid_alive
from harness.kill_leftovers import probe_writable as probe_writable
from harness.kill_leftovers import remove_dead_probes as remove_dead_probes

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
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
    except OSError as e:  # a writer that lost the name (pandas on a full disk): the message names the file
        if e.filename not in (None, tmp) and e.errno is not None:
            raise
        raise write_failure(e, path, Path(tmp)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


#: The errors of a write that more room would have let through: a full disk, a quota, a file size limit.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure(e: OSError, path: str | Path, written: Path | None = None) -> OSError:
    """`e` as an OSError naming `path`, with the errno the file system gave. A short write through
    numpy or a file object's close loses it ("3000 requested and 2016 written", no errno), which hid
    a full disk from the message and its fix: one more byte appended to `written` (the file the write
    failed on, about to be removed) gets the file system's own answer."""
    code = e.errno
    if code is None and written is not None:
        code = write_errno(written)
    strerror = os.strerror(code) if code is not None and (e.errno is None or not e.strerror) else e.strerror
    return OSError(code, strerror or str(e), str(path))


def write_errno(path: Path) -> int | None:
    """The errno (one of NO_ROOM: ENOSPC on a full disk, EFBIG past the file size limit) of appending
    one byte to the existing file `path`; None when it went through or failed for another reason (the
    byte is left: call it on a file about to be removed)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        os.write(fd, b"\0")
    except OSError as e:
        return e.errno if e.errno in NO_ROOM else None
    finally:
        os.close(fd)
    return None


def room_fix(e: OSError, writable_fix: str) -> str:
    """What to do about a refused write: make room when it was room that ran out, else `writable_fix`."""
    if e.errno == errno.EFBIG:
        return "raise the file size limit (ulimit -f)"
    if e.errno in NO_ROOM:
        return "free some space on its file system"
    return writable_fix


def lock_failure(lock_file: str, e: OSError) -> str:
    """Why a run entry's lock file could not be taken, and the fix: one wording for the runner and the
    store's readers (a group's store whose locks another member made under umask 022; no room)."""
    fix = room_fix(e, "make it writable for you (a store shared by a group: chmod -R g+w on its locks folder, and "
                      "umask 002 for every member)")
    return f"cannot lock a run's entry at {lock_file} ({e.strerror or e}); {fix}, and rerun: every stored run is kept"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 whatever the locale: leaderboard.md's `±` crashed the write phase under LC_ALL=C."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


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


# --- folders: umask, free space, new folders, whole-folder swaps -----------------------------------

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



def name_fits(folder: Path, name: str) -> None:
    """OSError (ENAMETOOLONG) when the file system of `folder` (or of its nearest existing ancestor)
    takes no file name as long as `name`: a working folder named after --out, refused before training
    rather than when the outputs are staged after it."""
    try:
        limit = os.pathconf(nearest_folder(folder), "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer: the usual limit
        limit = 255
    if len(os.fsencode(name)) > limit:
        raise OSError(errno.ENAMETOOLONG, "File name too long for the hidden working folders named after it beside "
                      "it; a shorter name fits", str(folder / name))


def nearest_folder(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: where a folder not made yet would be made, so
    what is checked before training (writable, free space) can be checked without making it (bad
    input found later would leave the empty folder behind)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes_short(folder: Path) -> int | None:
    """The free bytes of `folder`'s file system when fewer than MIN_FREE_BYTES, else None."""
    free = shutil.disk_usage(folder).free
    return free if free < MIN_FREE_BYTES else None


def folder_beside(parent: Path, prefix: str) -> Path:
    """A new empty folder `parent/PREFIX<random>`, with the permissions the umask gives (mkdtemp
    makes 0700 folders: the umask decides who may read what is published from it), and the setgid
    bit it got from a setgid `parent`: a chmod without it cleared it, so in a group's store the files
    of each new entry took their writer's own group, and under umask 007 no other member could read them."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        os.chmod(path, (0o777 & ~umask()) | (os.stat(path).st_mode & stat.S_ISGID))
    except BaseException:
        rmtree(path)
        raise
    return path


def rmtree(path: Path) -> None:
    """Remove a folder (or file), making read-only folders of it writable first; leave what cannot be removed.
    The folder it is in is never changed: a folder of another user's it could not empty made that folder (a
    group's runs/, when this user had made it) 0700, and the whole group lost the store. Nor is a file's mode:
    unlinking needs its folder writable, not the file, and a chmod of a file reaches every hard link of it (a
    `cp -al` backup of a store's entry, made 0700 as its read-only entry folder was removed)."""
    top = os.path.abspath(path)

    def writable_then_retry(func, p, _exc):
        try:
            if os.path.abspath(p) != top:
                os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if stat.S_ISDIR(os.lstat(p).st_mode) or os.name == "nt":  # Windows: a read-only file is not deleted
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=writable_then_retry)
    else:
        path.unlink(missing_ok=True)


def swap_folder(new: Path, final: Path, aside: Path, keep: Iterable[str] = ()) -> None:
    """Move the complete folder `new` to `final`. Whatever is at `final` is renamed to `aside`
    first and removed only once `new` is in; if moving `new` in fails, it is put back. `keep`: names
    in the old folder that are not the caller's to remove (a user's file): moved into the new one,
    and where the new one has that name, the old folder stays at `aside`, with a warning. A remnant
    of `aside` that cannot be removed (another user's files) is for the caller's leftover cleanup."""
    if not os.path.lexists(final):
        os.rename(new, final)
        return
    # held: a Ctrl-C or SIGTERM landing just after the second rename, still inside its `try`, put
    # `aside` back onto the new `final` (an OSError, exit 1 instead of 130/143); between the two it
    # left no run at `final`. Held, it is raised once the swap is whole.
    with interrupts_held():
        os.rename(final, aside)
        try:
            os.rename(new, final)
        except OSError:
            os.rename(aside, final)  # put the old one back
            raise
    clash = [name for name in keep if os.path.lexists(final / name)]
    for name in keep:
        if name not in clash:
            os.rename(aside / name, final / name)
    if clash:
        warnings.warn(f"{final} is replaced, and {', '.join(clash)} in it, which memprox did not write, would be "
                      f"overwritten: the old folder is kept as {aside}; move your files out of it", stacklevel=3)
        return
    rmtree(aside)
