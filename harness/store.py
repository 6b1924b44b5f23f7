"""Content-addressed run store: a run's spec hash is its folder.

Each entry holds one `.npy` per recorded array and a `manifest.json` (spec, package versions,
timings, FLOPs per recorder, accuracies, and a SHA-256 per array file). Entries are written to a
temporary folder and renamed into place, so a crash leaves either nothing or a whole entry; a
damaged entry (missing file, checksum mismatch) is reported as missing and recomputed.
Interrupted runs leave a checkpoint under `partial/` that the next attempt resumes from.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.runspec import RunSpec
from harness.training import RunOutput


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("memprox", "torch", "numpy", "scikit-learn", "cleanlab"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class StoredRun:
    """A finished run as read back from the store."""

    spec: RunSpec
    path: Path
    manifest: dict

    @property
    def recorders(self) -> set[str]:
        return set(self.manifest["recorders"])

    def arrays(self, recorder_key: str) -> dict[str, np.ndarray]:
        if recorder_key not in self.manifest["recorders"]:
            raise KeyError(f"run {self.spec.label()} did not record {recorder_key!r}")
        names = self.manifest["recorders"][recorder_key]["arrays"]
        return {n: np.load(self.path / f"{recorder_key}.{n}.npy") for n in names}


class RunStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
            (self.root / "partial").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HarnessError(f"cannot create the run store at {self.root}: {e}; pass a writable --store") from e

    def _dir(self, spec: RunSpec) -> Path:
        return self.root / "runs" / spec.digest()

    def get(self, spec: RunSpec) -> StoredRun | None:
        """The stored run, or None when absent or damaged (a damaged entry is removed)."""
        path = self._dir(spec)
        manifest_path = path / "manifest.json"
        if not path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            for fname, digest in manifest["checksums"].items():
                if _sha256(path / fname) != digest:
                    raise ValueError(f"checksum mismatch in {fname}")
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"run store entry {path.name} ({spec.label()}) is damaged ({e}); recomputing it")
            shutil.rmtree(path, ignore_errors=True)
            return None
        return StoredRun(spec, path, manifest)

    def put(self, spec: RunSpec, out: RunOutput, device: str, extra: dict | None = None) -> StoredRun:
        final = self._dir(spec)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.digest()}-", dir=self.root / "runs"))
        try:
            checksums: dict[str, str] = {}
            recorders: dict[str, dict] = {}
            for key, arrays in out.arrays.items():
                recorders[key] = {
                    "arrays": sorted(arrays),
                    "seconds": out.recorder_seconds[key],
                    "flops": out.recorder_flops[key],
                }
                for name, arr in arrays.items():
                    fname = f"{key}.{name}.npy"
                    np.save(tmp / fname, arr)
                    checksums[fname] = _sha256(tmp / fname)
            manifest = {
                "spec": spec.to_dict(),
                "spec_hash": spec.digest(),
                "label": spec.label(),
                "versions": package_versions(),
                "device": device,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "train_seconds": out.train_seconds,
                "train_flops": out.train_flops,
                "train_acc": out.train_acc,
                "test_acc": out.test_acc,
                "recorders": recorders,
                "history": out.history,
                "checksums": checksums,
                **(extra or {}),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.clear_checkpoint(spec)
        return StoredRun(spec, final, manifest)

    # checkpoints of unfinished runs -------------------------------------------------------
    def _ckpt(self, spec: RunSpec) -> Path:
        return self.root / "partial" / f"{spec.digest()}.pt"

    def save_checkpoint(self, spec: RunSpec, state: dict, recorder_keys: list[str]) -> None:
        path = self._ckpt(spec)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"recorder_keys": sorted(recorder_keys), "state": state}, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, spec: RunSpec, recorder_keys: list[str]) -> dict | None:
        path = self._ckpt(spec)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: start the run over
            warnings.warn(f"checkpoint {path} is unreadable ({e}); restarting that run")
            return None
        if blob["recorder_keys"] != sorted(recorder_keys):
            return None
        return blob["state"]

    def clear_checkpoint(self, spec: RunSpec) -> None:
        self._ckpt(spec).unlink(missing_ok=True)
