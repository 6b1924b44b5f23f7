"""Content-addressed run store that several processes (experiments, Ray drivers) can share.

`runs/<spec hash>/` holds one `.npy` per recorded array and a `manifest.json` (`harness.manifest`)
with a SHA-256 per array. Every write of an entry happens under that entry's file lock
(`locks/<hash>.lock`, the `filelock` package), and the lock is what makes the store write-once:
whoever holds it re-reads the entry first, so a spec two processes need is trained once; the other
process waits on the lock and then reads. An entry is built in a temporary folder and swapped into
place (old entry renamed aside, new one renamed in, old one removed), so a crash at any point
leaves either the complete old entry or the complete new one, and a reader never deletes anything:
a damaged entry reads as missing and is replaced by the next writer. Interrupted runs leave a
checkpoint under `partial/` (written by the lock holder) that the next attempt resumes from;
`clean()` removes what kills leave behind, skipping anything a live writer still holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from harness.errors import HarnessError, StorageError
from harness.io import atomic_write, file_sha256
from harness.manifest import Manifest
from harness.runspec import RunSpec

#: Refuse to start training when the store's file system has less room than this.
MIN_FREE_BYTES = 64 * 2**20
_LEFTOVER = re.compile(r"^\.(?:tmp|old)-([0-9a-f]+)-")
_CKPT_TEMP = re.compile(r"^(?:\.([0-9a-f]+)\.pt\..+|([0-9a-f]+)\.tmp\d+)$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rmtree(path: Path) -> None:
    """Remove a folder, making read-only parts writable first; leave what cannot be removed."""

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
        if recorder_key not in self.manifest.recorders:
            raise KeyError(f"run {self.spec.label()} did not record {recorder_key!r}")
        names = self.manifest.recorders[recorder_key].arrays
        try:
            return {n: np.load(self.path / f"{recorder_key}.{n}.npy") for n in names}
        except FileNotFoundError:
            if self.lock is None:
                raise
            with self.lock:  # another process was swapping in an upgraded entry: read after it
                return {n: np.load(self.path / f"{recorder_key}.{n}.npy") for n in names}


class RunStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._locks: dict[str, FileLock] = {}
        try:
            for sub in ("runs", "partial", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HarnessError(f"cannot create the run store at {self.root}: {e.strerror}; "
                               "pass a writable --store") from e

    def _dir(self, spec: RunSpec) -> Path:
        return self.root / "runs" / spec.digest()

    def lock(self, spec: RunSpec | str) -> FileLock:
        """The entry's lock (one object per entry in this process, so holding it is reentrant)."""
        digest = spec if isinstance(spec, str) else spec.digest()
        if digest not in self._locks:
            self._locks[digest] = FileLock(self.root / "locks" / f"{digest}.lock")
        return self._locks[digest]

    # checks before training ---------------------------------------------------------------
    def check_writable(self) -> None:
        """HarnessError naming the folder when the store cannot take new entries (read-only,
        another user's, nearly full): said before anything trains, not after."""
        for sub in ("runs", "partial", "locks"):
            folder = self.root / sub
            try:
                fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
                os.close(fd)
                os.unlink(probe)
            except OSError as e:
                raise HarnessError(f"run store folder {folder} is not writable ({e.strerror}); "
                                   "fix its permissions or pass another --store") from e
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise HarnessError(f"run store {self.root} has only {free / 2**20:.0f} MiB free; "
                               "free some space or pass another --store")

    # reading ------------------------------------------------------------------------------
    def get(self, spec: RunSpec) -> StoredRun | None:
        """The stored run, or None when absent or damaged. Never deletes: a damaged entry is
        replaced by the next `put`, under its lock. An entry that looks missing or damaged while a
        writer is swapping it is read again once the writer lets go of the lock."""
        found = self._read(spec)
        if isinstance(found, StoredRun):
            return found
        if found is not None or self._swapping(spec) or os.path.lexists(self._dir(spec)):
            with self.lock(spec):
                found = self._read(spec)
        if isinstance(found, Exception):
            path = self._dir(spec)
            reason = found.strerror if isinstance(found, OSError) and found.strerror else found
            warnings.warn(f"run store entry {path} ({spec.label()}) is damaged or unreadable ({reason}); "
                          "recomputing it")
            return None
        return found

    def _swapping(self, spec: RunSpec) -> bool:
        return any((self.root / "runs").glob(f".old-{spec.digest()}-*"))

    def _read(self, spec: RunSpec) -> StoredRun | Exception | None:
        path = self._dir(spec)
        if not os.path.lexists(path):
            return None
        try:
            if not path.is_dir():
                raise ValueError("it is not a folder")
            manifest = Manifest.from_dict(json.loads((path / "manifest.json").read_text()))
            for fname, digest in manifest.checksums.items():
                if file_sha256(path / fname) != digest:
                    raise ValueError(f"checksum mismatch in {fname}")
            if manifest.spec_hash != spec.digest():
                raise ValueError("it belongs to another spec")
        except (OSError, ValueError, KeyError, TypeError) as e:
            return e
        return StoredRun(spec, path, manifest, self.lock(spec))

    # writing ------------------------------------------------------------------------------
    def put(self, spec: RunSpec, arrays: dict[str, dict[str, np.ndarray]], manifest: Manifest) -> StoredRun:
        """Write the entry (checksums filled in here) and swap it into place under the entry's lock.
        StorageError naming the path when the file system refuses; any old complete entry stays."""
        final = self._dir(spec)
        runs = final.parent
        with self.lock(spec):
            tmp: Path | None = None
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.digest()}-", dir=runs))
                os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: let the umask decide who reads
                checksums: dict[str, str] = {}
                for key, named in arrays.items():
                    for name, arr in named.items():
                        fname = f"{key}.{name}.npy"
                        np.save(tmp / fname, arr)
                        checksums[fname] = file_sha256(tmp / fname)
                manifest.checksums = checksums
                (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=1, default=str))
                self._swap(tmp, final)
                tmp = None
            except OSError as e:
                raise StorageError(f"cannot write run store entry {e.filename or final} ({e.strerror or e}); "
                                   "the runs already stored are kept, rerun once the store is writable") from e
            finally:
                if tmp is not None:
                    _rmtree(tmp)
            self.clear_checkpoint(spec)
        return StoredRun(spec, final, manifest, self.lock(spec))

    @staticmethod
    def _swap(tmp: Path, final: Path) -> None:
        """Move the complete new entry into place; the old one (entry, stray file) goes only after."""
        if not os.path.lexists(final):
            os.rename(tmp, final)
            return
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            os.rename(old, final)  # put the old entry back
            raise
        _rmtree(old)  # a remnant (another user's files) is retried by clean()

    # checkpoints of unfinished runs (written by the holder of the entry's lock) -------------
    def _ckpt(self, spec: RunSpec) -> Path:
        return self.root / "partial" / f"{spec.digest()}.pt"

    def save_checkpoint(self, spec: RunSpec, state: dict, recorder_keys: list[str]) -> None:
        blob = {"recorder_keys": sorted(recorder_keys), "state": state}
        atomic_write(self._ckpt(spec), lambda p: torch.save(blob, p))

    def load_checkpoint(self, spec: RunSpec, recorder_keys: list[str]) -> dict | None:
        path = self._ckpt(spec)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            if blob["recorder_keys"] != sorted(recorder_keys):
                return None
            return blob["state"]
        except Exception as e:  # a torn or foreign file: start the run over
            warnings.warn(f"checkpoint {path} is unreadable ({e}); restarting that run")
            return None

    def clear_checkpoint(self, spec: RunSpec) -> None:
        self._ckpt(spec).unlink(missing_ok=True)

    # cleaning up after kills --------------------------------------------------------------
    def clean(self) -> list[str]:
        """Remove temp and swapped-out entry folders, temp checkpoints, and checkpoints of runs
        that are already complete, each only when its entry's lock is free (no live writer).
        An entry swapped aside by a writer killed mid-swap is put back instead.
        Returns the names removed."""
        removed = []
        candidates: list[tuple[str, Path]] = []
        for p in sorted((self.root / "runs").iterdir(), key=lambda p: not p.name.startswith(".old-")):
            m = _LEFTOVER.match(p.name)
            if m:
                candidates.append((m.group(1), p))
        for p in (self.root / "partial").iterdir():
            m = _CKPT_TEMP.match(p.name)
            if m:
                candidates.append((m.group(1) or m.group(2), p))
            elif p.suffix == ".pt" and (self.root / "runs" / p.stem / "manifest.json").exists():
                candidates.append((p.stem, p))
        for digest, path in candidates:
            try:
                with self.lock(digest).acquire(timeout=0):
                    final = self.root / "runs" / digest
                    if path.name.startswith(".old-") and not os.path.lexists(final):
                        os.rename(path, final)  # killed mid-swap: the old complete entry goes back
                        continue
                    _rmtree(path)
            except (Timeout, OSError):
                continue  # a live writer holds it, or it is not ours to remove
            if not os.path.lexists(path):
                removed.append(path.name)
        return removed
