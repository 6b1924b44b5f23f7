"""How the run store saves a checkpoint of an unfinished run so that it loads with
`torch.load(weights_only=True)`: numpy arrays become marked tensors (and come back as arrays), numpy
scalars Python numbers, and a file whose zip CRCs fail, of another format or of another spec is
refused (nothing is ever unpickled)."""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.io import atomic_write, failure_reason, umask, write_errno

#: Bumped when the checkpoint layout changes; a checkpoint of another format restarts its run.
CKPT_FORMAT = 2
_NUMPY = "__numpy__"  # marks a numpy array saved as a tensor in a checkpoint


def save_checkpoint(path: Path, digest: str, state: dict, recorder_keys: list[str]) -> None:
    """Save `state` so that `load_checkpoint` can read it with `weights_only=True`: numpy
    arrays become tensors (and come back as arrays), numpy scalars Python numbers."""
    atomic_write(path, lambda p: _torch_save(_blob(digest, state, recorder_keys), p))


def _blob(digest: str, state: dict, recorder_keys: list[str]) -> dict:
    return {"format": CKPT_FORMAT, "spec": digest, "recorder_keys": sorted(recorder_keys), "state": to_tensors(state)}


def save_checkpoints(items: Iterable[tuple[Path, str, dict, list[str]]]) -> None:
    """Checkpoints that belong together (`path, digest, state, recorder_keys` each; the members of an
    ensemble chunk), each as `save_checkpoint` writes it, all written in full under temporary names
    before the first is renamed into place: a kill while they are written leaves the previous set
    whole, and only one in the instants of the renames leaves a mixed set (which its reader must
    detect). `items` may be a generator, so one state at a time is held."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, digest, state, keys in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # as atomic_write names it
            os.close(fd)
            staged.append((Path(tmp_name), path))
            os.chmod(tmp_name, 0o666 & ~umask())
            _torch_save(_blob(digest, state, keys), Path(tmp_name))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def torch_save(obj: Any, path: Path) -> None:
    """`torch.save` for other writers (the transformers integration's tracker state): a refused write is
    an OSError naming `path` with the file system's errno, not torch's "unexpected pos" RuntimeError."""
    _torch_save(obj, path)


def _torch_save(blob: dict, path: Path) -> None:
    """torch.save, with a failed write as the OSError it is: torch's zip writer reports a full disk
    as a RuntimeError ("unexpected pos ..."), which callers that keep training on a failed
    checkpoint (and atomic_write's clean-up) would not take for a write error."""
    try:
        torch.save(blob, path)
    except RuntimeError as e:  # the file system's own errno when it has one (a full disk: ENOSPC), not torch's text
        code = write_errno(path)
        if code is not None:
            raise OSError(code, os.strerror(code), str(path)) from e
        raise OSError(errno.EIO, f"writing {path} failed, the disk may be full ({e})", str(path)) from e


def load_checkpoint(path: Path, digest: str, recorder_keys: list[str]) -> dict | None:
    """The saved state, or None to start the run over: no checkpoint, one that recorded other
    signals, or (with one warning line) one that is torn, damaged, of another spec or format,
    or foreign (anything that needs unpickling is refused, never run). The file is left for
    the run's next checkpoint to replace."""
    if not path.exists():
        return None
    try:
        blob = read_checkpoint(path, digest)
    except Exception as e:  # a torn, damaged or foreign file: start the run over
        reason = ("it needs unpickling, which memprox refuses" if isinstance(e, pickle.UnpicklingError)
                  else failure_reason(e))
        warnings.warn(f"checkpoint {path} is unreadable or not a memprox checkpoint ({reason}); "
                      "ignoring it and restarting that run")
        return None
    if blob["recorder_keys"] != sorted(recorder_keys):
        return None
    return from_tensors(blob["state"])


def to_tensors(obj: Any) -> Any:
    """`obj` with numpy arrays as marked tensors and numpy scalars as Python numbers, the only
    forms a `weights_only` load accepts."""
    if isinstance(obj, np.ndarray):
        return {_NUMPY: torch.from_numpy(np.require(obj, requirements=["C", "W"]))}
    if isinstance(obj, np.generic):
        return obj.item()
    return _map_containers(obj, to_tensors)


def from_tensors(obj: Any) -> Any:
    """The inverse of `to_tensors`: marked tensors back to numpy arrays."""
    if isinstance(obj, dict):
        if set(obj) == {_NUMPY} and isinstance(obj[_NUMPY], torch.Tensor):
            return obj[_NUMPY].numpy()
    return _map_containers(obj, from_tensors)


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


def read_checkpoint(path: Path, digest: str) -> dict:
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
