"""What killed experiments leave for an --out, and settling it: a staging folder whose process was killed
(found by its marker and its free lock, never by name alone), a swap of outputs cut short (finished or undone by
`harness.file_swap.recover_swap`), and the staging folders that a run killed beside another --out left there
(named in a warning, never touched). Its own job: `harness.outputs` checks, stages and publishes, calling
`clean_stale` under the folder's lock in `check_out` and `publish`; the experiment and the tests import these
names from there.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from filelock import FileLock, Timeout

from harness.file_swap import JOURNAL, RECORD, plain_file, read_record, recorded_unchanged, recover_swap, unstarted
from harness.io import killed_as_made, leftovers, pid_alive, rmtree
from harness.store_admin import lock_held
from harness.store_entry_files import user_name

#: Written into a staging folder when it is made: proof that a stale one is memprox's to remove.
STAGING_MARKER = ".memprox-staging"
#: Locked (flock, the `filelock` package) by the staging folder's process for the folder's whole life,
#: before the marker is written: the folder is stale only when this lock is free. A PID would not do:
#: a process in another PID namespace (a container sharing the volume) sees other PIDs.
STAGING_LOCK = ".memprox-staging.lock"
_STAGING_BESIDE = re.compile(r"\.(.+)\.tmp-\d+-[a-z0-9_]{8}")  # outputs._new_folder's staging beside --out NAME
_INSIDE = re.compile(r"\.memprox-(tmp|old)-(\d+)(?:-|$)")


def _stale(out: Path) -> list[tuple[re.Match[str], Path]]:
    """Staging ("tmp") and set-aside ("old") folders of `out` that killed processes left, beside and in it:
    the name, and the marker or journal written inside on creation (or a record, or nothing but the lock
    and a dead PID); a staging folder's lock must be free (an older memprox took none: a dead PID). A
    set-aside folder is found under the folder's lock, which every swap holds: none is running."""
    def owned(m: re.Match[str], folder: Path) -> bool:
        if m.group(1) == "old":
            return plain_file(folder, JOURNAL) is not None or unstarted(folder)
        if plain_file(folder, STAGING_MARKER) is None:  # a publish killed before its rename, or `staging` as it made it
            if read_record(folder)[0] is None:
                if not killed_as_made(folder, m, STAGING_LOCK):
                    return False
            elif not _published_only(folder, m):
                return False
        elif plain_file(folder, STAGING_LOCK) is None:
            return not pid_alive(int(m.group(2)))
        try:
            with FileLock(folder / STAGING_LOCK).acquire(timeout=0):
                return True
        except (Timeout, OSError):
            return False

    beside = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-(\d+)(?:-|$)")
    return leftovers(out.parent, beside, owned) + (leftovers(out, _INSIDE, owned) if out.is_dir() else [])


def _published_only(folder: Path, m: re.Match[str]) -> bool:
    """Whether `folder`, holding a record but no marker, is a staging folder whose publish was killed before its
    rename: named exactly as made (mkdtemp's 8 characters after the PID), holding its record, the files it records
    unchanged, the folders they are in and perhaps the lock, nothing else. The record alone proved nothing: a
    user's output folder (one memprox published) named `.OUT.tmp-1` beside --out OUT, with a file of the user's
    in it, was removed whole."""
    if not re.fullmatch(r"[a-z0-9_]{8}", folder.name[m.end():]):
        return False
    try:
        _, ours, changed = recorded_unchanged(folder)
        allowed = {RECORD, STAGING_LOCK, *ours}
        parents = {str(Path(rel).parent) for rel in allowed} - {"."}
        parents |= {str(p) for rel in parents for p in Path(rel).parents if str(p) != "."}
        for top, dirs, names in os.walk(folder):
            here = Path(top).relative_to(folder)
            for name in dirs:
                if (here / name).as_posix() not in parents or (Path(top) / name).is_symlink():
                    return False
            for name in names:
                rel = (here / name).as_posix()
                if rel not in allowed or plain_file(folder, rel) is None:
                    return False
    except OSError:
        return False
    return not changed


def _say_others_left(out: Path) -> None:
    """A warning for each staging folder that a run killed while writing the outputs of another folder beside `out`
    left there (marked, its lock free): hidden, it is removed only by the next run with that --out, and went unseen.
    Never removed from here (that folder's swap may be part-way, which only its own cleanup settles), and its lock
    only read (`lock_held`): one made there as its publish drops it would be renamed into that --out."""
    try:
        found = sorted(out.parent.iterdir())
    except OSError:  # a parent that may be written but not listed: nothing to say
        return
    for folder in found:
        m = _STAGING_BESIDE.fullmatch(folder.name)
        if m is None or m.group(1) == out.name or folder.is_symlink() or not folder.is_dir() or \
                plain_file(folder, STAGING_MARKER) is None or plain_file(folder, STAGING_LOCK) is None or \
                lock_held(folder / STAGING_LOCK):
            continue
        other, uid = out.parent / m.group(1), folder.stat().st_uid  # another user's: theirs to delete
        may = "you may also delete it" if uid == os.geteuid() else f"it is {user_name(uid)}'s, who may also delete it"
        warnings.warn(f"{folder} was left by a memprox run killed while writing its outputs for {other}: the next run "
                      f"with --out {other} removes it (and finishes or undoes a publish cut short); {may}")


def clean_stale(out: Path) -> None:
    """Settle what killed experiments left for --out (call under the folder's lock): a staging
    folder is removed, a swap of outputs is finished or rolled back (`harness.file_swap.recover_swap`).
    A folder that merely has the name is never touched."""
    for m, folder in _stale(out):
        if m.group(1) == "tmp":
            rmtree(folder)
        else:
            recover_swap(folder, out)
