"""Content-addressed run store that several processes (experiments, Ray drivers) can share.

`runs/<spec hash>/` holds one `.npy` per recorded array and a `manifest.json` (`harness.manifest`)
with a SHA-256 per array and one over the manifest itself. An entry is trusted only when those
checksums are complete (every array the manifest names has one) and match the bytes on disk; the
arrays a caller loads are checked again on the bytes it loads. Anything else (a changed number, a
missing array, an entry written before manifests carried their own checksum) reads as missing, with
one warning line naming the entry, and is recomputed; an entry the process may not read is a
HarnessError naming the path and the fix, as recomputing would fail on it too.

Every write of an entry happens under that entry's file lock (`locks/<hash>.lock`, the `filelock`
package), and the lock is what makes the store write-once:
whoever holds it re-reads the entry first, so a spec two processes need is trained once; the other
process waits on the lock and then reads. An entry is built in a temporary folder and swapped into
place (old entry renamed aside, new one renamed in, old one removed), so a crash at any point
leaves either the complete old entry or the complete new one, and a reader never deletes anything:
a damaged entry reads as missing and is replaced by the next writer. Interrupted runs leave a
checkpoint under `partial/` (written by the lock holder) that the next attempt resumes from. A
checkpoint is loaded with `weights_only=True`, so a file planted in a shared store's `partial/`
cannot run code: it holds only tensors and plain values (numpy arrays are saved as tensors), and
one that is damaged (its zip CRCs), belongs to another spec or needs unpickling restarts the run.
`clean()` removes what kills leave behind, only when it is the store's own (its names and
contents) and no live writer still holds it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from harness.errors import HarnessError, StorageError
from harness.io import atomic_write, file_sha256
from harness.manifest import Manifest
from harness.runspec import RunSpec

#: Refuse to start training when the store's file system has less room than this.
MIN_FREE_BYTES = 64 * 2**20
_DIGEST = "[0-9a-f]{20}"  # RunSpec.digest()
_LEFTOVER = re.compile(rf"^\.(?:tmp|old)-({_DIGEST})-")
_CKPT_TEMP = re.compile(rf"^(?:\.({_DIGEST})\.pt\..+|({_DIGEST})\.tmp\d+)$")
#: Bumped when the checkpoint layout changes; a checkpoint of another format restarts its run.
CKPT_FORMAT = 2
_NUMPY = "__numpy__"  # marks a numpy array saved as a tensor in a checkpoint


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


def _reason(e: BaseException) -> str:
    """One line saying why a read failed (OSError's strerror, else the exception's first line)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _unreadable(path: Path, e: OSError) -> HarnessError:
    """An entry this process may not read: recomputing it would fail to replace it as well."""
    where = f" on {e.filename}" if e.filename else ""
    return HarnessError(f"run store entry {path} cannot be read ({e.strerror or e}{where}); "
                        f"fix the permissions of {path} or remove it")


def _named_files(manifest: Manifest) -> set[str]:
    return {f"{key}.{name}.npy" for key, rec in manifest.recorders.items() for name in rec.arrays}


def _read_manifest(path: Path, digest: str) -> Manifest:
    """The entry's manifest when its own checksum matches, it belongs to `digest`, and its array
    checksums are complete (exactly one per array it names). ValueError says what is wrong;
    OSError (a permission, say) is the caller's to report. The arrays are not hashed here."""
    try:
        text = (path / "manifest.json").read_bytes()
    except FileNotFoundError:
        raise ValueError("manifest.json is missing") from None
    manifest = Manifest.from_json(text)
    if manifest.spec_hash != digest:
        raise ValueError("it belongs to another spec")
    named, summed = _named_files(manifest), set(manifest.checksums)
    if named != summed:
        gaps = ", ".join(sorted(named ^ summed)[:3])
        raise ValueError(f"its checksums do not cover exactly the arrays it names ({gaps})")
    return manifest


def _check_file(path: Path, fname: str, expected: str) -> None:
    try:
        digest = file_sha256(path / fname)
    except FileNotFoundError:
        raise ValueError(f"{fname} is missing") from None
    if digest != expected:
        raise ValueError(f"checksum mismatch in {fname}")


def _checked_bytes(path: Path, fname: str, expected: str) -> bytes:
    """The file's bytes, checked against its checksum: what is loaded is what was verified."""
    try:
        data = (path / fname).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{fname} is missing") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"checksum mismatch in {fname}")
    return data


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
        with self.lock:
            try:
                self.manifest = _read_manifest(self.path, self.spec.digest())
                return self._load(recorder_key)
            except PermissionError as e:
                raise _unreadable(self.path, e) from e
            except (OSError, ValueError, KeyError) as e:
                raise self._damaged(e) from e

    def _load(self, recorder_key: str) -> dict[str, np.ndarray]:
        out = {}
        for name in self.manifest.recorders[recorder_key].arrays:
            fname = f"{recorder_key}.{name}.npy"
            data = _checked_bytes(self.path, fname, self.manifest.checksums[fname])
            out[name] = np.load(io.BytesIO(data), allow_pickle=False)
        return out

    def _damaged(self, e: BaseException) -> StorageError:
        return StorageError(f"run store entry {self.path} was damaged while in use ({_reason(e)}); "
                            "rerun to recompute it")


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
        """The stored run, or None when absent, damaged or unverifiable (one warning line naming
        the entry; that includes entries written before manifests carried their own checksum,
        which are recomputed once). HarnessError naming the path when it may not be read. Never
        deletes: a damaged entry is replaced by the next `put`, under its lock. An entry that looks
        missing or damaged while a writer is swapping it is read again once the writer lets go."""
        found = self._read(spec)
        if isinstance(found, StoredRun):
            return found
        if found is not None or self._swapping(spec) or os.path.lexists(self._dir(spec)):
            with self.lock(spec):
                found = self._read(spec)
        if isinstance(found, Exception):
            warnings.warn(f"run store entry {self._dir(spec)} ({spec.label()}) is damaged or unverifiable "
                          f"({_reason(found)}); recomputing it")
            return None
        return found

    def _swapping(self, spec: RunSpec) -> bool:
        return any((self.root / "runs").glob(f".old-{spec.digest()}-*"))

    def _read(self, spec: RunSpec) -> StoredRun | Exception | None:
        """The verified entry, None when there is none, or the exception saying why it cannot be
        trusted. HarnessError when it may not be read (permissions)."""
        path = self._dir(spec)
        try:
            os.lstat(path)
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise _unreadable(path, e) from e
        try:
            if not path.is_dir():
                raise ValueError("it is not a folder")
            manifest = _read_manifest(path, spec.digest())
            for fname, digest in sorted(manifest.checksums.items()):
                _check_file(path, fname, digest)
        except PermissionError as e:
            raise _unreadable(path, e) from e
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
                        if np.asarray(arr).dtype.hasobject:  # would need unpickling to read back
                            raise TypeError(f"{key}.{name} is an object array; the store keeps numbers only")
                        fname = f"{key}.{name}.npy"
                        np.save(tmp / fname, arr)
                        checksums[fname] = file_sha256(tmp / fname)  # the bytes as written, read back
                manifest.checksums = checksums
                (tmp / "manifest.json").write_text(manifest.to_json())
                try:
                    _read_manifest(tmp, spec.digest())  # as every reader will check it
                except ValueError as e:
                    raise StorageError(f"run store entry {final} did not read back as written ({e}); "
                                       "the runs already stored are kept") from e
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
        """Save `state` so that `load_checkpoint` can read it with `weights_only=True`: numpy
        arrays become tensors (and come back as arrays), numpy scalars Python numbers."""
        blob = {"format": CKPT_FORMAT, "spec": spec.digest(), "recorder_keys": sorted(recorder_keys),
                "state": _to_tensors(state)}
        atomic_write(self._ckpt(spec), lambda p: torch.save(blob, p))

    def load_checkpoint(self, spec: RunSpec, recorder_keys: list[str]) -> dict | None:
        """The saved state, or None to start the run over: no checkpoint, one that recorded other
        signals, or (with one warning line) one that is torn, damaged, of another spec or format,
        or foreign (anything that needs unpickling is refused, never run). The file is left for
        the run's next checkpoint to replace."""
        path = self._ckpt(spec)
        if not path.exists():
            return None
        try:
            blob = _read_checkpoint(path, spec.digest())
        except Exception as e:  # a torn, damaged or foreign file: start the run over
            reason = ("it needs unpickling, which memprox refuses" if isinstance(e, pickle.UnpicklingError)
                      else _reason(e))
            warnings.warn(f"checkpoint {path} is unreadable or not a memprox checkpoint ({reason}); "
                          "ignoring it and restarting that run")
            return None
        if blob["recorder_keys"] != sorted(recorder_keys):
            return None
        return _from_tensors(blob["state"])

    def clear_checkpoint(self, spec: RunSpec) -> None:
        self._ckpt(spec).unlink(missing_ok=True)

    # cleaning up after kills --------------------------------------------------------------
    def clean(self) -> list[str]:
        """Remove temp and swapped-out entry folders, temp checkpoints, and checkpoints of runs
        that are already complete, each only when it is the store's own (named as the store names
        them; a folder holding nothing but entry files) and its entry's lock is free (no live writer).
        An entry swapped aside by a writer killed mid-swap is put back instead.
        Returns the names removed."""
        removed = []
        candidates: list[tuple[str, Path]] = []
        for p in sorted((self.root / "runs").iterdir(), key=lambda p: not p.name.startswith(".old-")):
            m = _LEFTOVER.match(p.name)
            if m and _own_entry_folder(p):
                candidates.append((m.group(1), p))
        for p in (self.root / "partial").iterdir():
            if not _plain_file(p):
                continue
            m = _CKPT_TEMP.match(p.name)
            if m:
                candidates.append((m.group(1) or m.group(2), p))
            elif re.fullmatch(rf"{_DIGEST}\.pt", p.name) and (self.root / "runs" / p.stem / "manifest.json").exists():
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


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _own_entry_folder(path: Path) -> bool:
    """A folder only the store could have left: a real folder of entry files (arrays, manifest)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return all(_plain_file(p) and (p.name == "manifest.json" or p.name.endswith(".npy"))
                   for p in path.iterdir())
    except OSError:
        return False


def _to_tensors(obj: Any) -> Any:
    """`obj` with numpy arrays as marked tensors and numpy scalars as Python numbers, the only
    forms a `weights_only` load accepts."""
    if isinstance(obj, np.ndarray):
        return {_NUMPY: torch.from_numpy(np.require(obj, requirements=["C", "W"]))}
    if isinstance(obj, np.generic):
        return obj.item()
    return _map_containers(obj, _to_tensors)


def _from_tensors(obj: Any) -> Any:
    """The inverse of `_to_tensors`: marked tensors back to numpy arrays."""
    if isinstance(obj, dict):
        if set(obj) == {_NUMPY} and isinstance(obj[_NUMPY], torch.Tensor):
            return obj[_NUMPY].numpy()
    return _map_containers(obj, _from_tensors)


def _map_containers(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """`fn` applied to the values of a dict, list or tuple; the container itself when nothing
    changed (so a model's state dict keeps its OrderedDict type and version metadata)."""
    if isinstance(obj, dict):
        new = {k: fn(v) for k, v in obj.items()}
        return obj if all(new[k] is v for k, v in obj.items()) else new
    if isinstance(obj, (list, tuple)):
        items = [fn(v) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    return obj


def _read_checkpoint(path: Path, digest: str) -> dict:
    """The checkpoint's contents after its zip CRCs are checked (torch does not check them) and
    with `weights_only=True` (nothing is unpickled); ValueError when it is not this store's
    checkpoint of `digest`."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"CRC mismatch in {bad}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if (not isinstance(blob, dict) or blob.get("format") != CKPT_FORMAT or not isinstance(blob.get("state"), dict)
            or not isinstance(blob.get("recorder_keys"), list)):
        raise ValueError(f"it is not a format-{CKPT_FORMAT} memprox checkpoint")
    if blob.get("spec") != digest:
        raise ValueError("it belongs to another run")
    return blob
