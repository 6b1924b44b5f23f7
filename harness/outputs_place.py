"""Where --out is and what is in it, for the checks before training and the writes after: its lock
(`out_lock`), its resolved path, the place its staging folders go, whether it holds content, and
whose. Kept apart from `harness.outputs`, which checks and publishes with them, so that module has
room under the 400-line limit."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness.errors import HarnessError, StorageError
from harness.file_swap import plain_file
from harness.io import exclusive, folder_beside, name_fits, probe_writable

#: What memprox keeps inside --out while it works there (its lock, staging and set-aside folders,
#: write probes): never content, never recorded (hidden names).
_WORKING = re.compile(r"\.memprox-(?:lock|(?:tmp|old)-\d+-.*)|\.write-test-.*")
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextmanager
def _out_lock(out: Path) -> Iterator[None]:
    """Serialises work on `out` between processes: a lock file beside it (`out` may not exist yet) and,
    when it is a folder, one inside it (alone where beside it may not be written: a mount point under a
    read-only parent; every swap into an existing `out` holds it). Removed on release."""
    with ExitStack() as stack:
        try:
            stack.enter_context(exclusive(out.parent / f".{out.name}.memprox-lock"))
        except OSError as e:
            if e.errno not in _NOT_WRITABLE or not out.is_dir():
                raise
        if out.is_dir():
            stack.enter_context(exclusive(out / ".memprox-lock"))
        yield


#: A relative path's current folder is gone (os.getcwd() fails): said so, not as a link loop or a traceback.
_NO_CWD = "the current folder no longer exists (deleted or moved), so the relative --out {out} leads nowhere"


def _resolved(path: Path, flag: str) -> Path:
    """The absolute path with links resolved; a link loop is bad input (RuntimeError or OSError)."""
    try:
        return Path(path).resolve()
    except FileNotFoundError as e:
        if Path(path).is_absolute():
            raise
        raise HarnessError(f"{_NO_CWD.format(out=path)}; cd to an existing folder, or pass an absolute "
                           f"{flag}") from e
    except (RuntimeError, OSError) as e:
        raise HarnessError(f"{flag} {path} cannot be resolved ({e}); pass a path without a symbolic link loop") from e


def _apart(path: Path, other: Path, flag: str, what: str, fix: str) -> None:
    if path == other or other in path.parents or path in other.parents:
        where = "is" if path == other else "is inside" if other in path.parents else "contains"
        raise HarnessError(f"{flag} {path} {where} {what} {other}; {fix}")


def _whose(out: Path, owner: str | None) -> str:
    """What is in the way in `out`: another experiment's results, or entries memprox did not write."""
    if owner is not None:
        return "results of another experiment"
    names = sorted(p.name for p in out.iterdir() if not _WORKING.fullmatch(p.name))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"files memprox has no record of writing ({shown}), yours or a memprox's before 1 December 2026"


def _trained_on(out: Path) -> str | None:
    """The kind of device (cpu, cuda, mps) the outputs in `out` were computed on, as its summary.json says; None
    where it cannot say. The owner's id does not tell: the CPU's id is the one `auto` had on any machine
    (`harness.config_identity.DEVICE_HASHED_AS`), a GPU machine's `auto` folder among them."""
    device = recorded_device(out)
    return (device.partition(":")[0] or None) if device is not None else None


def recorded_device(out: Path) -> str | None:
    """The device the outputs in `out` were computed on, as its summary.json spells it (`cuda:5`); None where it
    cannot say: no summary.json, not a regular file (a FIFO put in its place would hang the read), unreadable, not
    JSON (nested too deep to parse among them: RecursionError), not an object, or its device not a string. Read as
    found: a caller that trusts it checks it (`former_ids` hashes it and matches the folder's owner)."""
    try:
        summary = plain_file(out, "summary.json")
        device = None if summary is None else json.loads(summary.read_text(encoding="utf-8")).get("device")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return device if isinstance(device, str) else None


def _has_content(out: Path) -> bool:
    """Whether `out` holds anything but what memprox keeps there while it works."""
    return any(not _WORKING.fullmatch(p.name) for p in out.iterdir())


def _work_place(out: Path) -> Path:
    """Where `out`'s staging and set-aside folders go: beside it when it does not exist yet or a file
    made there renames into it, else inside it (a mount point, a bind mount, a parent this process
    may not write)."""
    if out.is_dir():
        try:
            probe_writable(out.parent, into=out)
        except OSError:
            return out
    name_fits(out.parent, f".{out.name}.tmp-{os.getpid()}-{'x' * 8}")  # `_new_folder`'s longest name there
    return out.parent


def _new_folder(out: Path, kind: str, place: Path) -> Path:
    """A new folder for `out` in `place`: `.NAME.KIND-PID-RANDOM` beside it, `.memprox-KIND-PID-RANDOM`
    inside it (the PID says which process made it; whether it still lives is the lock's to say)."""
    prefix = f".memprox-{kind}-" if place == out else f".{out.name}.{kind}-"
    return folder_beside(place, f"{prefix}{os.getpid()}-")


def _out_after_training(out: Path | str) -> Path:
    """--out resolved again to write into it: a relative one whose current folder was deleted while the runs
    trained ended the run in a traceback (FileNotFoundError from os.getcwd)."""
    try:
        return Path(out).resolve()
    except FileNotFoundError as e:
        if Path(out).is_absolute():
            raise
        raise StorageError(f"cannot write outputs: {_NO_CWD.format(out=out)}; cd to the folder to write them in and "
                           "rerun: every run is kept in the store") from e
