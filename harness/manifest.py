"""The typed manifest of a stored run: what was trained, how, on what, and what it cost.

The store writes it as `manifest.json` beside the arrays (`to_json`) and reads it back with
`from_json`, which refuses an entry with a missing or mistyped field (the store then treats the entry
as missing and recomputes it) instead of failing later on a string key. Every number in it can reach
an output (costs, accuracies, the summary), so the file carries a SHA-256 over the canonical JSON of
everything else in it (`manifest_sha256`): a manifest without it (written before it existed) or
with any value changed is not trusted. `engine`, `threads` and `machine` are
recorded because they change results at float-rounding level: the same spec trained one at a time
and in a batched ensemble, with another thread count, compiled or not (`compiled`), or on another CPU kernel set or GPU
(`harness.machine`), agrees only up to rounding; a run resumed from its checkpoint on another machine
records each machine with the epochs it trained (`machine`'s `epochs` and `earlier`, made by
`harness.machine.trained_by`). A field added later (`meter`, `machine`, `compiled`) is absent
from older files; it reads as what those runs had (`meter` 1) or as unknown (`machine` `{}`, `compiled` None, and
`versions` `{}`, `created` ""), never as the reading process's own, and the checksum covers the
fields as written, so older manifests stay trusted and their runs are reused.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

#: How a run was trained: alone, or as a member of a batched ensemble (`harness.jobs.Job.engine`).
ENGINES = ("single", "ensemble")
#: The manifest.json field holding the SHA-256 of the manifest's other fields (`manifest_digest`).
DIGEST_FIELD = "manifest_sha256"
#: How the recorders' seconds were measured. 2 (2 December 2026): a recorder's FLOP-counted
#: execution is never timed (`harness.timing.Meter`). 1, a manifest without the field: a recorder
#: called once per run was timed on its counted call, the counter's overhead included, so its
#: seconds read high (the final eval pass: ~1.3x where ~1.1x is right on digits). FLOPs are alike.
METER_VERSION = 2
#: What a manifest field made for the training process reads as when an older manifest.json lacks it.
READER_DEFAULTS: dict[str, Callable[[], Any]] = {"versions": dict, "created": str, "machine": dict,
                                                  "compiled": lambda: None}


def manifest_digest(raw: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, compact separators) of a parsed manifest: it
    depends on the values a reader gets, not on the file's layout, so any tool can check it."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: The packages besides memprox whose versions can change a run's floats: the manifest's `versions`,
#: each machine's record (`harness.machine`), and what a Ray node is compared on (`ray_versions`).
FLOAT_PACKAGES = ("torch", "numpy", "scikit-learn", "cleanlab")


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("memprox", *FLOAT_PACKAGES):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class RecorderRecord:
    """One recorder's arrays and measured cost on one run."""

    arrays: list[str]
    seconds: float
    flops: int
    name: str = ""  # the recorder request, so an upgrade can re-request exactly what was recorded
    params: list[list[Any]] = field(default_factory=list)


@dataclass
class Manifest:
    spec: dict[str, Any]
    spec_hash: str
    label: str
    engine: str  # "single" | "ensemble"
    device: str
    threads: int
    train_seconds: float
    train_flops: int
    train_acc: float
    test_acc: float
    recorders: dict[str, RecorderRecord]
    history: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0  # the job's wall clock, shared out over the runs it trained
    versions: dict[str, str] = field(default_factory=package_versions)  # absent (older runs): {}, unknown
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))  # absent: ""
    checksums: dict[str, str] = field(default_factory=dict)  # array file -> SHA-256, set by the store
    meter: int = METER_VERSION  # how recorder seconds were measured; absent (older runs): 1
    #: the machine that trained the run (`harness.machine.machine_record`, made in the training process
    #: by `harness.jobs.make_manifest`); for a run resumed on another machine, the one that finished it
    #: with its `epochs` and the machines before it in `earlier` (`harness.machine.trained_by`);
    #: absent (older runs): {}, unknown
    machine: dict[str, Any] = field(default_factory=dict)
    #: whether the training step ran under torch.compile (`--compile`, single runs; the ensemble engine
    #: never compiles): not in the run's address, yet compiled and eager runs agree only to rounding;
    #: absent (older runs): None, unknown
    compiled: bool | None = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """manifest.json's text: the fields plus `manifest_sha256`, computed over exactly what a
        reader parses back (values that JSON cannot hold are written, and hashed, as strings)."""
        body = json.loads(json.dumps(self.to_dict(), default=str))
        return json.dumps({**body, DIGEST_FIELD: manifest_digest(body)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """The manifest of a manifest.json, or ValueError when it is not JSON, lacks its checksum
        (written by a memprox before manifests were checksummed) or does not match it."""
        try:
            raw = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"manifest.json is not valid JSON ({e})") from e
        if not isinstance(raw, dict):
            raise ValueError("manifest is not a JSON object")
        claimed = raw.pop(DIGEST_FIELD, None)
        if claimed is None:
            raise ValueError("manifest.json has no checksum: written before memprox checksummed manifests")
        if claimed != manifest_digest(raw):
            raise ValueError("checksum mismatch in manifest.json")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> Manifest:
        """The manifest, or ValueError naming what is missing or malformed."""
        if not isinstance(raw, dict):
            raise ValueError("manifest is not a JSON object")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in raw]
        if missing:
            raise ValueError(f"manifest lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs.setdefault("meter", 1)  # written before the field existed: measured the first way
        # fields whose default describes the process that makes a manifest: absent from an older file,
        # they are unknown, never the reader's (its packages, its clock, its machine)
        for name, unknown in READER_DEFAULTS.items():
            if name not in kwargs:
                kwargs[name] = unknown()
        try:
            kwargs["recorders"] = {k: RecorderRecord(**v) for k, v in raw["recorders"].items()}
            manifest = cls(**kwargs)
        except (TypeError, AttributeError) as e:
            raise ValueError(f"manifest is malformed ({e})") from e
        if manifest.engine not in ENGINES:
            raise ValueError(f"manifest has an unknown engine {manifest.engine!r}")
        for name in ("checksums", "machine"):
            if not isinstance(getattr(manifest, name), dict):
                raise ValueError(f"manifest's {name} field is not a JSON object")
        if manifest.compiled not in (True, False, None):
            raise ValueError("manifest's compiled field is not true, false or null")
        earlier = manifest.machine.get("earlier", [])
        if not isinstance(earlier, list) or not all(isinstance(m, dict) for m in earlier):
            raise ValueError("manifest's machine.earlier is not a list of JSON objects")
        return manifest

