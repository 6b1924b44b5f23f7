"""What a run store holds (`scan`) and removing what a user selects from it (`prune`).

The store only grows: runs a version bump made unreachable and checkpoints of runs never resumed
stay forever, and deleting folders by hand is how users lose runs. `scan` reads a store without
locking, creating or cleaning anything (a read-only store is fine); `prune` removes only what is
the store's own (`own_files`: a digest-named real folder holding its manifest.json and only the
arrays that manifest names; `partial/<digest>.pt` checkpoints), each under its entry's lock taken
without waiting (an entry in use is skipped), re-checked under that lock (a writer may have replaced
it since the scan), and renamed aside (`.tmp-<digest>-prune...`, never read as an entry) before the
files checked are deleted (one put in meanwhile stays): a kill never leaves half an entry. Symlinks
are never followed (but a runs/ that is one: `is_store`), not even a partial/ that is one
(`Scan.linked`); runs/, partial/, locks/ and lock files stay. A live writer's files are `busy`.

"Unreachable" is exact: an entry is unreachable only when its manifest's spec rebuilds into
today's `RunSpec` with every stored field as stored (`rebuild_spec`) and that spec's digest is not
the entry's name. A spec today's classes cannot hold as stored (a field since removed, a value
normalised differently) is "unknown" and never offered for removal as unreachable.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.io import failure_reason
from harness.manifest import Manifest
from harness.recipe import Recipe
from harness.runspec import Corruption, DataSpec, RunSpec, TrainSubset
from harness.store import CKPT_TEMP, LEFTOVER, store_leftovers, verify_entry
from harness.store_entry_files import own_files

try:
    import fcntl
except ImportError:  # Windows: no flock to test, so nothing reads as held
    fcntl = None  # type: ignore[assignment]

DIGEST = re.compile(r"[0-9a-f]{20}")
CHECKPOINT = re.compile(r"([0-9a-f]{20})\.pt")


@dataclass
class Entry:
    """One digest-named item of runs/ as read (`status`: complete, damaged, unreadable, or
    foreign: a symlink or file named as an entry, never the store's own)."""

    digest: str
    path: Path
    bytes: int
    status: str
    reason: str = ""
    manifest: Manifest | None = None  # verified when complete; parsed as far as it reads when damaged
    reach: str = ""  # complete entries: current | unreachable | unknown (`reachability`)
    own: bool = True  # only its manifest and arrays inside (`own_files`): the only kind prune removes
    files: tuple[str, ...] = ()  # when own: the names of those files, all prune ever deletes of it

    def field(self, name: str) -> str | None:
        """`dataset`, `model`, `label` or `created` from the manifest; None when it does not read."""
        m = self.manifest
        if m is None:
            return None
        spec = m.spec if isinstance(m.spec, dict) else {}
        data = found if isinstance(found := spec.get("data"), dict) else {}
        value = {"dataset": data.get("dataset"), "model": spec.get("model"), "label": m.label,
                 "created": m.created}[name]
        return value if isinstance(value, str) else None


@dataclass
class Item:
    """A file or folder of the store that is not an entry: a checkpoint, a leftover of a kill, or
    something foreign (never removed)."""

    name: str  # relative to the store root
    path: Path
    bytes: int
    digest: str = ""
    busy: bool = False  # its entry's lock is held: a live writer's own file, not a leftover (`held`)


@dataclass
class Scan:
    root: Path
    entries: list[Entry]
    checkpoints: list[Item]  # partial/<digest>.pt of runs not stored complete
    leftovers: list[Item]  # what kills left (`harness.store.store_leftovers`), or a live writer's (`busy`)
    foreign: list[Item]  # anything else in runs/ or partial/: never touched
    linked: list[str]  # store folders that are symlinks (partial/): never walked into


def is_store(root: Path) -> bool:
    """A folder holding runs/; a runs/ that is a link to a folder (a big store's runs on another disk) counts, as it
    does for the runs trained into it: prune deletes only files it checked as the store's own, never a folder that
    may hold others, so following it cannot reach a user's files."""
    return (root / "runs").is_dir()


def held(root: Path, digest: str) -> bool:  # a live writer trains, checkpoints or stores that run
    return lock_held(root / "locks" / f"{digest}.lock")


def lock_held(lock: Path) -> bool:
    """Whether another process holds the lock file `lock` (flock, as `filelock` takes it), tested with a shared flock
    on it opened read-only: nothing is made or written. Absent or not to be opened: free (no one could hold it)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if fcntl is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released as the file is closed
        return False
    except OSError as e:
        return isinstance(e, BlockingIOError)  # held by another; any other failure tells nothing
    finally:
        os.close(fd)


def tree_bytes(path: Path, freeable: bool = False) -> int:
    """Sum of the sizes (lstat: a symlink counts as itself, never its target) of the files under `path`;
    `freeable`: only of files with no other hard link (one linked elsewhere, as by a `cp -al` backup,
    frees nothing when removed here)."""
    def counted(st: os.stat_result) -> int:
        return st.st_size if not freeable or st.st_nlink == 1 else 0

    try:
        top = os.lstat(path)
    except OSError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return counted(top)
    total = 0
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            try:
                total += counted(os.lstat(os.path.join(folder, name)))
            except OSError:
                pass
    return total


def scan(root: Path) -> Scan:
    """Everything the store at `root` holds, read only (no lock taken, no file made or removed). A leftover or
    checkpoint whose entry's lock is held is marked `busy`: a running experiment is writing it (a temporary file it
    made after the listing of leftovers, too: it was counted as another's file)."""
    runs, partial = root / "runs", root / "partial"
    linked = ["partial"] if partial.is_symlink() else []  # a partial/ linked elsewhere (a home folder) is not ours
    left = [(d, p) for d, p in store_leftovers(root) if not (linked and p.parent == partial)]
    listed = {p for _, p in left}
    # one gone when looked at after its lock was found free was the live writer's, let go meanwhile: not listed
    leftovers = [Item(str(p.relative_to(root)), p, tree_bytes(p), d, busy) for d, p in left
                 if (busy := held(root, d)) or os.path.lexists(p)]
    entries, checkpoints, foreign = [], [], []
    for sub, folder in (("runs", runs), ("partial", partial)):
        for name in sorted(os.listdir(folder)) if folder.is_dir() and sub not in linked else []:
            path = folder / name
            if path in listed or not os.path.lexists(path):  # a leftover, or gone since the listing
                continue
            own = (DIGEST if sub == "runs" else CHECKPOINT).fullmatch(name)
            temp = (LEFTOVER if sub == "runs" else CKPT_TEMP).match(name)
            digest = next((g for g in found.groups() if g), "") if (found := own or temp) else ""
            if own and sub == "runs":  # one that fails to read because a prune removed it meanwhile is gone
                if (entry := read_entry(path)).status == "complete" or os.path.lexists(path):
                    entries.append(entry)
            elif own and own_checkpoint(path):
                checkpoints.append(Item(f"{sub}/{name}", path, tree_bytes(path), digest, held(root, digest)))
            elif temp and held(root, digest):  # made by the live writer since the leftovers were listed
                leftovers.append(Item(f"{sub}/{name}", path, tree_bytes(path), digest, True))
            elif os.path.lexists(path):  # not a live writer's file, removed as its lock was let go
                foreign.append(Item(f"{sub}/{name}", path, tree_bytes(path)))
    return Scan(root, entries, checkpoints, leftovers, foreign, linked)


def own_checkpoint(path: Path) -> bool:
    """A checkpoint as the store writes them: a regular file (not a link) that is a zip (torch.save)."""
    try:
        return path.is_file() and not path.is_symlink() and zipfile.is_zipfile(path)
    except OSError:
        return False


def read_entry(path: Path) -> Entry:
    """The entry at `path` checked as the store checks it on every read (manifest, checksums)."""
    digest, size = path.name, tree_bytes(path)
    if path.is_symlink() or not path.is_dir():
        return Entry(digest, path, size, "foreign", "not a real folder", own=False)
    if _special_inside(path):  # reading a FIFO (or a link to one) named as an array would hang
        return Entry(digest, path, size, "foreign", "holds links or special files", own=False)
    try:
        manifest = verify_entry(path, digest)
    except PermissionError as e:
        return Entry(digest, path, size, "unreadable", failure_reason(e), own=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        lenient = _lenient_manifest(path)
        files = own_files(path, lenient)
        return Entry(digest, path, size, "damaged", failure_reason(e), lenient, own=files is not None,
                     files=files or ())
    files = own_files(path, manifest)
    return Entry(digest, path, size, "complete", "", manifest, reachability(manifest.spec, digest),
                 own=files is not None, files=files or ())


def _special_inside(path: Path) -> bool:
    """Whether the folder holds anything but regular files and folders (a link, a FIFO, a device)."""
    try:
        return any(not (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False))
                   for e in os.scandir(path))
    except OSError:
        return False


def _lenient_manifest(path: Path) -> Manifest | None:
    """A damaged entry's manifest when it still parses (its fields select it), else None."""
    try:
        raw = json.loads((path / "manifest.json").read_bytes())
        raw.pop("manifest_sha256", None)
        return Manifest.from_dict(raw)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


# --- unreachable: re-deriving the address with today's code ----------------------------------------

def _build(cls: type, raw: Any, nested: dict[str, Callable[[Any], Any]]) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{cls.__name__} is not a JSON object")
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has fields today's memprox lacks: {', '.join(sorted(unknown))}")
    return cls(**{k: nested[k](v) if k in nested else v for k, v in raw.items()})


def rebuild_spec(raw: Any) -> RunSpec:
    """Today's RunSpec of a manifest's `spec`; ValueError (or TypeError) when its fields do not fit."""
    def subset(v: Any) -> TrainSubset | None:
        return None if v is None else _build(TrainSubset, v, {})

    def recipe(v: Any) -> Recipe:
        return _build(Recipe, v, {"milestones": lambda m: tuple(m) if isinstance(m, list) else m})

    def data(v: Any) -> DataSpec:
        return _build(DataSpec, v, {"corruption": lambda c: _build(Corruption, c, {})})

    return _build(RunSpec, raw, {"data": data, "recipe": recipe, "train_on": subset, "then_on": subset})


def _covers(built: Any, raw: Any) -> bool:
    """Every value of `raw` is in `built` as it is (fields `raw` lacks took today's defaults)."""
    if isinstance(raw, dict):
        return isinstance(built, dict) and all(k in built and _covers(built[k], v) for k, v in raw.items())
    return json.dumps(built, sort_keys=True) == json.dumps(raw, sort_keys=True)


def reachability(raw: Any, digest: str) -> str:
    """current: today's memprox reads this entry for its spec; unreachable: it never will (the spec
    rebuilds exactly and hashes elsewhere, e.g. after AUGMENT_VERSION or TIE_RULE_VERSION changed);
    unknown: the spec does not rebuild exactly, so nothing is claimed."""
    try:
        spec = rebuild_spec(raw)
        built = json.loads(json.dumps(spec.to_dict(), default=str))
        if not _covers(built, raw):
            return "unknown"
        today = spec.digest()
    except (ValueError, TypeError, AttributeError, KeyError):
        return "unknown"
    return "current" if today == digest else "unreachable"


# --- selection and removal ----------------------------------------------------------------------------

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
        if entry.status == "damaged" and not (self.damaged or self.everything):  # only when asked for
            return False
        if self.damaged and entry.status != "damaged":
            return False
        if self.unreachable and entry.reach != "unreachable":
            return False
        return ((self.dataset is None or entry.field("dataset") == self.dataset)
                and (self.model is None or entry.field("model") == self.model)
                and (self.label_contains is None or self.label_contains in (entry.field("label") or ""))
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
