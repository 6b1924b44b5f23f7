"""Removing what a user selects from a run store (`prune`), from what `harness.store_scan` read.

The store only grows: runs a version bump made unreachable (`harness.store_reach`) and checkpoints
of runs never resumed stay forever, and deleting folders by hand is how users lose runs. `prune`
removes only what is the store's own (`own_files`: a digest-named real folder holding its
manifest.json and only the arrays that manifest names; `partial/<digest>.pt` checkpoints), each
under its entry's lock taken without waiting (an entry in use is skipped), re-checked under that
lock (a writer may have replaced it since the scan), and renamed aside (`.tmp-<digest>-prune...`,
never read as an entry) before the files checked are deleted (one put in meanwhile stays): a kill
never leaves half an entry. Symlinks are never followed; runs/, partial/, locks/ and lock files stay.

Reading the store (`scan`, `read_entry`, `held`, ...) and reachability (`rebuild_spec`,
`reachability`) moved to those two modules; their names stay importable from here.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from harness.io import failure_reason
from harness.store import store_leftovers as store_leftovers
from harness.store import verify_entry as verify_entry
from harness.store_entry_files import own_files, user_name
from harness.store_reach import reachability as reachability
from harness.store_reach import rebuild_spec as rebuild_spec
from harness.store_scan import CHECKPOINT as CHECKPOINT
from harness.store_scan import DIGEST as DIGEST
from harness.store_scan import Entry, Item, own_checkpoint, read_entry, tree_bytes
from harness.store_scan import Scan as Scan
from harness.store_scan import held as held
from harness.store_scan import is_store as is_store
from harness.store_scan import lock_held as lock_held
from harness.store_scan import scan as scan


def label_has(label: str, text: str) -> bool:
    """`text` in `label` with a number at either end of it matched whole: as a plain substring `seed3`
    selected seed30 and the stability models of seed 2 (seed3000000 on), `noise=0.1` noise=0.15, so a
    prune of one run removed others. Letters stay plain text: `then=` and `random` select all theirs."""
    head = r"(?<![0-9])(?<![0-9]\.)" if text[:1].isdigit() else ""
    tail = r"(?![0-9]|\.[0-9]|e[-+]?[0-9])" if text[-1:].isdigit() else ""
    return re.search(head + re.escape(text) + tail, label) is not None


@dataclass
class Selection:
    """Criteria an entry must all meet (None: not asked). `everything`: the explicit --all."""

    older_than_days: float | None = None
    dataset: str | None = None
    model: str | None = None
    label_contains: str | None = None
    unreachable: bool = False
    damaged: bool = False
    everything: bool = False

    def matches(self, entry: Entry, now: datetime) -> bool:
        if entry.status not in ("complete", "damaged") or not entry.own:
            return False
        if entry.status == "damaged" and not (self.damaged or self.everything or entry.unchecked):  # when asked for
            return False  # (an older memprox's entry without a checksum is selected as complete ones are)
        if self.damaged and entry.status != "damaged":
            return False
        if self.unreachable and entry.reach != "unreachable":
            return False
        return ((self.dataset is None or entry.field("dataset") == self.dataset)
                and (self.model is None or entry.field("model") == self.model)
                and (self.label_contains is None or label_has(entry.field("label") or "", self.label_contains))
                and (self.older_than_days is None or age_days(entry.field("created"), now) > self.older_than_days))


def age_days(created: str | None, now: datetime) -> float:
    """Days since a manifest's `created`; -inf when it does not parse (never selected by age)."""
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            when = datetime.strptime(created or "", fmt)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.astimezone()  # written without a zone: the local time it was written in
        return (now - when).total_seconds() / 86400
    return float("-inf")


def _locked(root: Path, digest: str) -> FileLock:
    return FileLock(root / "locks" / f"{digest}.lock")


def remove_entry(root: Path, digest: str, selection: Selection, now: datetime) -> tuple[int | None, str]:
    """Remove the entry `digest` when its lock is free and, re-read under it, it is still selected and
    the store's own. (bytes freed, "") or (None, why it stays). The caller holds Ctrl-C around it
    (`harness.io.interrupts_held`), so that what was removed is counted and nothing is left half-way."""
    lock = _locked(root, digest)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None, "in use by another process (its lock is held)"
    try:
        path = root / "runs" / digest
        if not os.path.lexists(path):
            return None, ""  # removed since the scan (another prune)
        entry = read_entry(path)
        if not selection.matches(entry, now):
            why = "holds files that are not the store's own" if not entry.own else "changed since the scan"
            return None, why
        refused = not_yours(path)
        if refused:  # renamed aside, it could not be emptied: the run was gone from its address, its files left
            raise PermissionError(errno.EACCES, refused)
        aside = root / "runs" / f".tmp-{digest}-prune{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(path, aside)  # atomic: the entry is complete at its name or not there at all
        # back whole when a file was put in since the check, or a link swapped in (deleting reaches through it)
        if not stat.S_ISDIR(os.lstat(aside).st_mode) or own_files(aside, entry.manifest) != entry.files:
            os.rename(aside, path)
            return None, "holds files that are not the store's own"
        try:
            return delete_files(aside, entry.files), ""
        except OSError as e:
            return None, (f"set aside as runs/{aside.name} but not all of it could be removed "
                          f"({failure_reason(e)}); remove that by hand")
    finally:
        lock.release()


def not_yours(folder: Path) -> str:
    """Why this process may not delete the files of the entry `folder` (another user's, not writable
    for us), or "": its owner may (`delete_files` makes it writable first). Checked before the entry is
    renamed aside, which the store's group-writable runs/ allows anyone: another member's prune left
    that member's run at `runs/.tmp-<hash>-prune...`, gone from the store, for its owner to delete."""
    st = os.lstat(folder)
    effective = os.access in os.supports_effective_ids  # the user this process acts as (a setuid tool's too)
    if st.st_uid == os.geteuid() or os.access(folder, os.W_OK | os.X_OK, effective_ids=effective):
        return ""
    owner = user_name(st.st_uid)
    return (f"Permission denied: its folder is {owner}'s and not writable for you, so {owner} prunes it; in a "
            "store a group shares, every member writes with umask 002, see docs/store.md")


def delete_files(folder: Path, names: tuple[str, ...]) -> int:
    """Delete exactly the files `names` (those checked as the store's own) and then the empty folder,
    never anything else: a file put in after the check makes the last step fail, and stays. Returns
    the bytes freed (a file with another hard link frees nothing)."""
    freed = 0
    for name in names:
        st = os.lstat(folder / name)
        try:
            os.unlink(folder / name)
        except PermissionError:  # a folder made read-only: the entry's own, so made writable to delete it
            os.chmod(folder, stat.S_IRWXU)
            os.unlink(folder / name)
        freed += st.st_size if st.st_nlink == 1 else 0
    os.rmdir(folder)
    return freed


def remove_checkpoint(root: Path, item: Item, older_than_days: float | None = None) -> tuple[int | None, str]:
    """Remove a checkpoint of an unfinished run when its entry's lock is free (no run resumes from it now)
    and, checked again under the lock, it is still the store's own and not written for `older_than_days`."""
    lock = _locked(root, item.digest)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None, "in use by another process (its lock is held)"
    try:
        if not own_checkpoint(item.path):
            return None, ""
        if older_than_days is not None and idle_days(item.path) <= older_than_days:
            return None, "written again since the scan"
        size = tree_bytes(item.path, freeable=True)
        item.path.unlink()
        return size, ""
    finally:
        lock.release()


def idle_days(path: Path) -> float:
    """Days since the file was last written; -inf when it cannot be read (never selected by age)."""
    try:
        return (time.time() - path.stat().st_mtime) / 86400
    except OSError:
        return float("-inf")
