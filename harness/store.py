"""Content-addressed run store that several processes (experiments, Ray drivers) can share.

`runs/<spec hash>/` holds one `.npy` per recorded array and a `manifest.json` (`harness.manifest`) with a SHA-256
per array and one over the manifest itself. An entry is trusted only when those checksums are complete (every array
the manifest names has one) and match the bytes on disk; the arrays a caller loads are checked again on the bytes it
loads. Anything else (a changed number, a missing array, an entry written before manifests carried their own
checksum) reads as missing, with one warning line naming the entry, and is recomputed; an entry the process may not
read is a HarnessError naming the path and the fix, as recomputing would fail on it too.

Every write of an entry happens under that entry's file lock (`locks/<hash>.lock`, the `filelock` package), and the
lock is what makes the store write-once: whoever holds it re-reads the entry first, so a spec two processes need is
trained once; the other process waits on the lock and then reads. An entry is built in a temporary folder and
swapped into place (old entry renamed aside, new one renamed in, a user's files moved over, old one removed), so a
crash at any point leaves either the complete old entry or the complete new one, and a reader never deletes anything:
a damaged entry reads as missing and is replaced by the next writer. Interrupted runs leave a checkpoint under
`partial/` (written by the lock holder) that the next attempt resumes from. A checkpoint is loaded with
`weights_only=True`, so a file planted in a shared store's `partial/` cannot run code: it holds only tensors and plain
values (numpy arrays as tensors), and one that is damaged (its zip CRCs), belongs to another spec or needs unpickling
restarts the run. `clean()` removes what kills leave behind (listed by `harness.store_leftovers`), only when it is
the store's own (its names and contents) and no live writer still holds it. A store this process cannot write
(`check_writable`: a team's read-only store of finished runs) is only read, never locked or cleaned, and one an
experiment must train into is refused before training (`require_writable`).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

import harness.store_entry_files as entry_files
from harness.checkpoints import load_checkpoint, save_checkpoint
from harness.errors import HarnessError, StorageError
from harness.io import (
    failure_reason,
    folder_beside,
    lock_failure,
    nearest_folder,
    rmtree,
    room_fix,
    swap_folder,
)
from harness.manifest import Manifest
from harness.runspec import RunSpec
from harness.store_entry_files import (
    UNCHECKED,
    _move_users_files,
    _write_arrays,
    checked_bytes,
    foreign_names,
    own_entry_folder,
    raw_manifest,
    read_manifest,
    unchecked,
    verify_entry,
)
from harness.store_leftovers import CKPT_TEMP as CKPT_TEMP
from harness.store_leftovers import LEFTOVER as LEFTOVER
from harness.store_leftovers import _plain_file, _superseded, _swaps_left
from harness.store_leftovers import store_leftovers as store_leftovers
from harness.store_place import refusal, write_problem


@contextmanager
def locked(lock: FileLock) -> Iterator[None]:
    """`with lock:`, where a lock file this process may not open (a group's store whose lock another member made
    under umask 022) is one line naming it and the fix, as runner's locking says it: a reader re-reading a damaged
    entry under its lock ended in a traceback. Timeout (another process holds it) passes through."""
    try:
        lock.acquire()
    except Timeout:
        raise
    except OSError as e:
        raise StorageError(lock_failure(lock.lock_file, e)) from e
    try:
        yield
    finally:
        lock.release()


def _unreadable(path: Path, e: OSError) -> HarnessError:
    """An entry this process may not read: recomputing it would fail to replace it as well."""
    where = f" on {e.filename}" if e.filename else ""
    fix = entry_files.unreadable_fix(path)  # another user's entry is that user's to fix
    return HarnessError(f"run store entry {path} cannot be read ({e.strerror or e}{where}); {fix}")


@dataclass
class StoredRun:
    """A finished run as read back from the store."""

    spec: RunSpec
    path: Path
    manifest: Manifest
    lock: FileLock | None = None

    @property
    def recorders(self) -> set[str]:
        return set(self.manifest.recorders)

    def arrays(self, recorder_key: str) -> dict[str, np.ndarray]:
        """The recorder's arrays, each checked against its checksum as it is loaded. A mismatch
        or a missing file is first taken for another process swapping in an upgraded entry: read
        again after it (with the new entry's manifest); still wrong is a StorageError."""
        if recorder_key not in self.manifest.recorders:
            raise KeyError(f"run {self.spec.label()} did not record {recorder_key!r}")
        try:
            return self._load(recorder_key)
        except PermissionError as e:
            raise _unreadable(self.path, e) from e
        except (OSError, ValueError) as e:
            first: Exception = e
        if self.lock is None:
            raise self._damaged(first) from first
        with locked(self.lock):
            try:
                self.manifest = read_manifest(self.path, self.spec.digest())
                return self._load(recorder_key)
            except PermissionError as e:
                raise _unreadable(self.path, e) from e
            except (OSError, ValueError, KeyError) as e:
                raise self._damaged(e) from e

    def _load(self, recorder_key: str) -> dict[str, np.ndarray]:
        out = {}
        for name in self.manifest.recorders[recorder_key].arrays:
            fname = f"{recorder_key}.{name}.npy"
            data = checked_bytes(self.path, fname, self.manifest.checksums[fname])
            out[name] = np.load(io.BytesIO(data), allow_pickle=False)
        return out

    def _damaged(self, e: BaseException) -> StorageError:
        return StorageError(f"run store entry {self.path} was removed or damaged while in use ({failure_reason(e)}; "
                            "a `memprox store prune` meanwhile?); rerun to recompute it")


def default_store() -> Path:
    """The store without --store: `<cache>/store` (MEMPROX_CACHE, else the user's cache folder)."""
    from harness.datasets.base import default_cache_dir  # lazy: `memprox store` need not load the datasets

    return default_cache_dir() / "store"


class RunStore:
    """Runs by spec, on disk. `create=False` reads (an absent store holds nothing) and checks
    (`check_writable`) without making any folder until `create()`: an experiment refused for bad
    input found while planning leaves no empty store behind."""

    def __init__(self, root: str | Path, create: bool = True) -> None:
        self.root = Path(root)
        self._locks: dict[str, FileLock] = {}
        self._unwritable: tuple[str, str] | None = None  # (what is wrong, the fix), from `check_writable`
        if create:
            self.create()

    def create(self) -> None:
        if self._unwritable is not None:  # only read (`check_writable`): an absent folder holds nothing
            return
        try:
            for sub in ("runs", "partial", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HarnessError(f"cannot create the run store at {self.root}: {e.strerror}; "
                               "pass a writable --store") from e

    def entry_dir(self, spec: RunSpec) -> Path:
        """The entry's folder, whether or not it exists (a task reads a manifest through it)."""
        return self.root / "runs" / spec.digest()

    def lock(self, spec: RunSpec | str) -> FileLock:
        """The entry's lock (one object per entry in this process, so holding it is reentrant)."""
        digest = spec if isinstance(spec, str) else spec.digest()
        if digest not in self._locks:
            self._locks[digest] = FileLock(self.root / "locks" / f"{digest}.lock")
        return self._locks[digest]

    def check_writable(self) -> None:
        """Whether the store can take new entries in its place (`write_problem`). One that cannot is
        only read (a team's store of finished runs); refused here when it holds no runs, else by `require_writable`."""
        self._unwritable = write_problem(self.root)
        if self._unwritable is not None and not (self.root / "runs").is_dir():
            raise HarnessError("; ".join(self._unwritable))

    def require_writable(self, missing: list[str]) -> None:
        """HarnessError, before training, when the store cannot be written and `missing` must be trained."""
        if self._unwritable is not None and missing:
            raise refusal(self._unwritable, missing)

    def get(self, spec: RunSpec) -> StoredRun | None:
        """The stored run, or None when absent, damaged or unverifiable (one warning line naming
        the entry; that includes entries written before manifests carried their own checksum,
        which are recomputed once). HarnessError naming the path when it may not be read. Never
        deletes: a damaged entry is replaced by the next `put`, under its lock. An entry that looks
        missing or damaged while a writer is swapping it is read again once the writer lets go."""
        found = self._read(spec)
        if isinstance(found, StoredRun):
            return found
        swapping = any((self.root / "runs").glob(f".old-{spec.digest()}-*"))  # a writer is replacing it
        if self._unwritable is None and (found is not None or swapping or os.path.lexists(self.entry_dir(spec))):
            with locked(self.lock(spec)):
                found = self._read(spec)
        if isinstance(found, Exception):
            warnings.warn(_not_read(self.entry_dir(spec), spec, found))
            return None
        return found

    def _read(self, spec: RunSpec) -> StoredRun | Exception | None:
        """The verified entry, None when there is none, or the exception saying why it cannot be
        trusted. HarnessError when it may not be read (permissions)."""
        path = self.entry_dir(spec)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise _unreadable(path, e) from e
        try:
            manifest = verify_entry(path, spec.digest())
        except PermissionError as e:
            raise _unreadable(path, e) from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            if not stat.S_ISDIR(mode):  # storing the run at its name would remove it
                raise _in_the_way(path, mode) from e
            return e
        return StoredRun(spec, path, manifest, self.lock(spec) if self._unwritable is None else None)

    def put(self, spec: RunSpec, arrays: dict[str, dict[str, np.ndarray]], manifest: Manifest) -> StoredRun:
        """Write the entry (checksums filled in here) and swap it into place under the entry's lock.
        StorageError naming the path when the file system refuses; any old complete entry stays."""
        final = self.entry_dir(spec)
        runs = final.parent
        with locked(self.lock(spec)):
            tmp: Path | None = None
            try:
                tmp = folder_beside(runs, f".tmp-{spec.digest()}-")
                manifest.checksums = _write_arrays(tmp, arrays)
                (tmp / "manifest.json").write_text(manifest.to_json())
                try:
                    read_manifest(tmp, spec.digest())  # as every reader will check it
                except ValueError as e:
                    raise StorageError(f"run store entry {final} did not read back as written ({e}); "
                                       "the runs already stored are kept") from e
                swap_folder(tmp, final, runs / f".old-{final.name}-{os.getpid()}", keep=foreign_names(final))
                tmp = None
            except OSError as e:
                raise StorageError(f"cannot write run store entry {_as_final(e, tmp, final)} ({e.strerror or e}); the "
                                   f"runs already stored are kept, {room_fix(e, 'make it writable')} and rerun") from e
            finally:
                if tmp is not None:
                    rmtree(tmp)
            self.clear_checkpoint(spec)
        return StoredRun(spec, final, manifest, self.lock(spec))

    # checkpoints of unfinished runs (written by the holder of the entry's lock) -------------
    def checkpoint_path(self, spec: RunSpec) -> Path:
        """Where an unfinished run of `spec` keeps the checkpoint it resumes from."""
        return self.root / "partial" / f"{spec.digest()}.pt"

    def save_checkpoint(self, spec: RunSpec, state: dict, recorder_keys: list[str]) -> None:
        """Save `state` so that `load_checkpoint` reads it with `weights_only=True`."""
        save_checkpoint(self.checkpoint_path(spec), spec.digest(), state, recorder_keys)

    def load_checkpoint(self, spec: RunSpec, recorder_keys: list[str]) -> dict | None:
        """The saved state, or None to start the run over (`harness.checkpoints.load_checkpoint`)."""
        return load_checkpoint(self.checkpoint_path(spec), spec.digest(), recorder_keys)

    def clear_checkpoint(self, spec: RunSpec) -> None:
        _remove_plain_file(self.checkpoint_path(spec))

    def clean(self) -> list[str]:
        """Remove temp and swapped-out entry folders, temp checkpoints, and checkpoints of runs already stored, each
        only when it is the store's own (named as the store names them; a folder holding nothing but entry files) and
        its entry's lock is free (no live writer). An entry a writer killed mid-swap set aside is put back, or its
        user's files go into the new one (`_swaps_left`). Returns the names removed (or put back) by this call."""
        removed: list[str] = []
        for digest, path in _swaps_left(self.root) if self._unwritable is None else []:  # read-only: nothing
            try:
                with self.lock(digest).acquire(timeout=0):
                    if not os.path.lexists(path) or (path.name == f"{digest}.pt" and
                                                     not _superseded(self.root, digest, path)):
                        continue  # under the lock: gone (another cleaner's), or a run checkpointed since the listing
                    final = self.root / "runs" / digest
                    if path.name.startswith(".old-") and not os.path.lexists(final):
                        os.rename(path, final)  # killed mid-swap: the old complete entry goes back (listed too)
                    _move_users_files(path, final)
                    if path.parent.name == "partial" or own_entry_folder(path):
                        rmtree(path)
            except (Timeout, OSError):
                continue  # a live writer holds it, or it is not ours to remove
            if not os.path.lexists(path):
                removed.append(path.name)
        return removed


def _not_read(path: Path, spec: RunSpec, found: Exception) -> str:
    """The warning for an entry `get` recomputes: one an older memprox wrote (no checksum) is not damaged."""
    why = (f"was {UNCHECKED}, so it is not read as it is" if unchecked(raw_manifest(path))
           else f"is damaged or unverifiable ({failure_reason(found)})")
    return f"run store entry {path} ({spec.label()}) {why}; recomputing it"


def _as_final(e: OSError, tmp: Path | None, final: Path) -> Path:
    """The file a refused write names, as it is named in the entry: the temporary folder it was written in is gone
    when the line is read (a disk full said `runs/.tmp-<hash>-x1y2/...`)."""
    where = Path(e.filename) if e.filename else final
    if tmp is not None and (where == tmp or tmp in where.parents):
        return final / where.relative_to(tmp)
    return nearest_folder(where)  # a temporary folder that could not be made: the folder that refused it (runs/)


def _in_the_way(path: Path, mode: int) -> HarnessError:
    return HarnessError(f"run store entry {path} is a {'link' if stat.S_ISLNK(mode) else 'file'}, not a folder memprox "
                        "wrote, and this run is stored at that name; move it away and rerun")


def _remove_plain_file(path: Path) -> None:
    """Remove `path` when it is a plain file, as the store writes checkpoints (a folder of that name, not the store's,
    ended the experiment that had just stored its run in a traceback); one the file system keeps is `clean`'s."""
    with suppress(OSError):
        if _plain_file(path):
            path.unlink()
