"""What a run store holds, read only (`scan`): `harness.store_admin` prunes from it, `store info` reports it.

Nothing here locks, creates or cleans anything, so a read-only store reads fine. Each entry is checked
as the store checks it on every read (`verify_entry`), and is the store's own only when its folder holds
its manifest and the arrays that manifest names and nothing else (`own_files`): only those are ever
offered for removal. Symlinks are never followed (but a runs/ that is one: `is_store`), not even a
partial/ that is one (`Scan.linked`). A leftover or checkpoint whose entry's lock is held is a live
writer's (`busy`, `held`), tested without taking the lock.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.executors.ray_probe import NAME as PROBE
from harness.io import failure_reason
from harness.manifest import Manifest
from harness.store import CKPT_TEMP, LEFTOVER, store_leftovers, verify_entry
from harness.store_entry_files import lenient_manifest, own_files, raw_manifest, unchecked
from harness.store_place import DIGEST, a_store, store_enterable
from harness.store_reach import reachability

try:
    import fcntl
except ImportError:  # Windows: no flock to test, so nothing reads as held
    fcntl = None  # type: ignore[assignment]

CHECKPOINT = re.compile(r"([0-9a-f]{20})\.pt")


@dataclass
class Entry:
    """One digest-named item of runs/ as read (`status`: complete, damaged, unreadable, or
    foreign: a symlink or file named as an entry, never the store's own). A damaged entry whose manifest
    has no checksum (`unchecked`) was written by a memprox before 1 December 2026: nothing in it need
    be wrong, but today's store never reads it again (a run that needs it trains again at its address),
    so it is unreachable, and its manifest's fields still name it (`raw`) though today's Manifest
    cannot hold them all (the first memprox wrote no `engine`)."""

    digest: str
    path: Path
    bytes: int
    status: str
    reason: str = ""
    manifest: Manifest | None = None  # verified when complete; parsed as far as it reads when damaged
    reach: str = ""  # complete entries: current | unreachable | unknown (`reachability`); `unchecked`: unreachable
    own: bool = True  # only its manifest and arrays inside (`own_files`): the only kind prune removes
    files: tuple[str, ...] = ()  # when own: the names of those files, all prune ever deletes of it
    raw: dict | None = None  # a damaged entry's manifest.json as parsed, when it is a JSON object
    unchecked: bool = False  # damaged only in having no checksum: an older memprox's, never read again

    def field(self, name: str) -> str | None:
        """`dataset`, `model`, `label` or `created` from the manifest (as parsed, when today's Manifest
        cannot hold it); None when it does not read."""
        m = self.manifest
        raw = vars(m) if m is not None else self.raw
        if raw is None:
            return None
        spec = found if isinstance(found := raw.get("spec"), dict) else {}
        data = found if isinstance(found := spec.get("data"), dict) else {}
        value = {"dataset": data.get("dataset"), "model": spec.get("model"), "label": raw.get("label"),
                 "created": raw.get("created")}[name]
        return value if isinstance(value, str) else None

    def recorders(self) -> list[str]:
        """The recorder keys its manifest names (as parsed, for a damaged entry); [] when it names none."""
        found = self.manifest.recorders if self.manifest is not None else (self.raw or {}).get("recorders")
        return sorted(found) if isinstance(found, dict) else []


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
    probes: list[Item]  # partial/.ray-probe-*: a Ray run's, or one its killed driver left (`ray_probe`)


def is_store(root: Path) -> bool:
    """A folder holding runs/ that is a store's (`store_place.a_store`: not a project's TensorBoard runs/, where
    `store prune` made locks/ among the user's files); a runs/ that is a link to a folder (a big store's runs on
    another disk) counts, as it does for the runs trained into it: prune deletes only files it checked as the
    store's own, never a folder that may hold others, so following it cannot reach a user's files. A store in a
    folder this user may not enter is a HarnessError (`store_enterable`), where `store info` and `prune` crashed."""
    store_enterable(root)
    return (root / "runs").is_dir() and a_store(root)


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
    entries, checkpoints, foreign, probes = [], [], [], []
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
            elif sub == "partial" and PROBE.fullmatch(name) and path.is_file() and not path.is_symlink():
                probes.append(Item(f"{sub}/{name}", path, tree_bytes(path)))
            elif os.path.lexists(path):  # not a live writer's file, removed as its lock was let go
                foreign.append(Item(f"{sub}/{name}", path, tree_bytes(path)))
    return Scan(root, entries, checkpoints, leftovers, foreign, linked, probes)


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
        raw = raw_manifest(path)
        lenient = lenient_manifest(raw)
        files = own_files(path, lenient)
        older = unchecked(raw)
        return Entry(digest, path, size, "damaged", failure_reason(e), lenient, "unreachable" if older else "",
                     own=files is not None, files=files or (), raw=raw, unchecked=older)
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


