"""An experiment's identity: a hash of what it computes, not where or how it runs (`Option.runtime`).
It marks the --out the experiment writes, so that a folder never holds two experiments' outputs:
another experiment's is refused without --overwrite (`harness.outputs.check_out`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path, PurePath
from typing import Any

from harness import options as _options
from harness.outputs_place import recorded_device

#: Runtime options that experiment ids hashed before they were found to be runtime, with the value
#: (their default) they are hashed at now, whatever the config holds: the ids of configs without them
#: stay, so --out folders written before keep their owner. `download` fetches files and computes
#: nothing: a rerun without it was "another experiment" on its own --out.
HASHED_AT: dict[str, Any] = {"download": False}
#: What `device` is hashed as, by the kind of device the runs compute on. Ids hashed the spelling, so
#: `--device cpu` after the default `auto` (the CPU on a machine without CUDA), or `cuda:0` after
#: `cuda`, was "another experiment" on its own --out, though each computes the same. Each kind is
#: hashed as the spelling most folders were written with, so that theirs keep their owner: the CPU as
#: `auto` (the default, on machines without CUDA), CUDA as `cuda` (the docs' GPU commands). A CPU and
#: a GPU run agree only to rounding: those stay two experiments.
DEVICE_HASHED_AS = {"cpu": "auto", "cuda": "cuda", "mps": "mps"}
_CUDA_INDEX = re.compile(r"cuda:(0|[1-9][0-9]*)")  # as resolve_device lists them: cuda:00 is refused


def device_kind(device: Any) -> str | None:
    """The kind of device (cpu, cuda, mps) `--device` trains on on this machine, as
    `harness.planner.resolve_device` resolves it (`auto`: CUDA where torch sees it); None for a name
    it refuses (`CPU`, `cuda:00`, `meta`), which the identity hashes as spelled."""
    if not isinstance(device, str):
        return None
    if device == "auto":
        import torch  # only here: the identity of an explicit device needs no torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device in DEVICE_HASHED_AS:
        return device
    return "cuda" if _CUDA_INDEX.fullmatch(device) else None


def experiment_id(cfg: Any) -> str:
    """Hash of what the experiment computes (not where or how it runs): the ownership mark of --out.
    `device` counts by its kind (`DEVICE_HASHED_AS`). A --data-root the dataset never reads
    (`harness.config.NO_DATA_ROOT`) is hashed as not given: with it, a rerun that dropped it as the
    warning says, or named another, was "another experiment" on its own --out. Ids of configs without
    it, and of datasets that read it (torchvision's, plugins'), are unchanged."""
    kind = device_kind(getattr(cfg, "device", None))
    return _hashed(cfg, None if kind is None else DEVICE_HASHED_AS[kind])


def former_ids(cfg: Any) -> tuple[str, ...]:
    """The ids `cfg` had while `device` was hashed as spelled, one per spelling of its device's kind (`auto` where
    it resolves to that kind here; `cuda`, `cuda:0`, ... for this machine's GPUs, and the `cuda:N` its --out says
    it was written with: `_written_with`), less the id it has now: an --out written under one of them holds this
    experiment's outputs, and is taken as its own."""
    now, kind = experiment_id(cfg), device_kind(getattr(cfg, "device", None))
    if kind is None:
        return ()
    spellings = [name for name in ("auto", kind) if device_kind(name) == kind]
    if kind == "cuda":
        import torch

        spellings += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        spellings += [name for name in (_written_with(cfg),) if name is not None]
    return tuple(dict.fromkeys(i for i in (_hashed(cfg, name) for name in spellings) if i != now))


def _written_with(cfg: Any) -> str | None:
    """The `cuda:N` the summary.json in `cfg`'s --out says its outputs were computed on, which may be no GPU of
    this machine: a folder written with `--device cuda:5` on an 8-GPU machine was "another experiment" on a 2-GPU
    one (the ids listed `cuda:0` and `cuda:1` only) and needed --overwrite. Only a spelling `--device` accepts for
    CUDA counts (not `cuda:05`, `cuda:-1`, nor another kind's), and only by its hash: it adds the id this very
    config had with it, so the folder is taken only where its owner is that id, never another experiment's."""
    out = getattr(cfg, "out", None)
    if not isinstance(out, (str, PurePath)):
        return None
    device = recorded_device(Path(out))
    return device if device is not None and _CUDA_INDEX.fullmatch(device) else None


def _hashed(cfg: Any, device: str | None) -> str:
    """The id with `device` hashed as given (None: as the config holds it)."""
    from harness.config import NO_DATA_ROOT  # config imports this module
    from harness.recipe import LATER_RECIPE_DEFAULTS, without_defaults

    runtime = _options.runtime_fields()
    what = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in runtime}
    what.update({k: v for k, v in HASHED_AT.items() if k in runtime and hasattr(cfg, k)})
    if device is not None and "device" in what:
        what["device"] = device
    what["recipe"] = without_defaults(what["recipe"], LATER_RECIPE_DEFAULTS)
    # the selection as the registry reads it (whitespace ignored, `csl()` is csl): ' csl' or 'csl()' in a
    # rerun named "another experiment" and needed --overwrite; plain selections keep their identity
    what["proxies"] = re.sub(r"\s+", "", str(what["proxies"])).replace("()", "")
    if "data_root" in what and str(what["dataset"]).partition(":")[0] in NO_DATA_ROOT:
        what["data_root"] = None  # unread (the warning says "drop it"): hashed at its default, as without it
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
