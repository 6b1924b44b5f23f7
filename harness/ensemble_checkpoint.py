"""Checkpoints of a batched-ensemble chunk (`harness.ensemble`), so a killed chunk resumes at its
last epoch end instead of training all its members again.

Each member keeps its own checkpoint where a single run of its spec would (the run store's
`partial/<spec hash>.pt`, in the store's format, read with `weights_only=True` by
`harness.checkpoints`): its row of the stacked parameters, batch-norm buffers and optimizer
state, and its history. The store already treats these files as its own: `RunStore.put` removes a
member's file when the member is stored, `clean()` removes those of stored runs, and an interrupted
experiment counts them as partly trained runs. Every file also carries what the chunk shares (epoch,
learning-rate schedule, the optimizer's step count and settings, samples seen, the clock, the
machines that trained its epochs: `harness.machine.trained_by`), the chunk's members in order,
and the token of the round of writes it belongs to. A round's files are all written before any
replaces the last round's (`harness.checkpoints.save_checkpoints`), so a kill while they are
written keeps the last round. A chunk resumes only from one complete round written by
exactly this chunk; anything else (a member without a file, a damaged file, another spec's, a single
run's, files of another chunk or of two rounds, as a kill in the instants of the renames leaves) is
ignored with one warning line, and the chunk trains from its start: members are never mixed.

No random-number-generator state is saved because the loop keeps none: batch order and
augmentation derive from (seed, epoch) (`harness.training`), and models that draw random numbers in
training (dropout) never join an ensemble. Restored this way, the stacked tensors, the optimizer and
the schedule are bit for bit those of the uninterrupted chunk, so its arrays and manifests are too
(apart from seconds).
"""

from __future__ import annotations

import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.checkpoints import save_checkpoints
from harness.machine import trained_before, trained_by
from harness.resuming import resuming_line
from harness.runspec import RunSpec
from harness.training import billed_seconds


class CheckpointStore(Protocol):
    """The part of `harness.store.RunStore` a chunk's checkpoints go through."""

    root: Any

    def checkpoint_path(self, spec: RunSpec) -> Path: ...

    def load_checkpoint(self, spec: RunSpec, recorder_keys: list[str]) -> dict | None: ...

    def clear_checkpoint(self, spec: RunSpec) -> None: ...


@dataclass
class ChunkProgress:
    """What a chunk has trained so far besides its tensors: a checkpoint saves it, a resume restores it."""

    epoch: int  # epochs done
    history: list[list[dict[str, float]]]  # per member
    failed: dict[int, int] = field(default_factory=dict)  # member -> epoch its loss became non-finite
    samples_seen: int = 0  # per member
    seconds: float = 0.0  # the training loop's clock, warm-up steps included
    warm_seconds: float = 0.0  # of each process's first step (`charged_seconds`)
    warm_samples: int = 0

    def charged_seconds(self) -> float:
        """The loop's seconds with each process's first step, its one-time warm-up (kernel choice,
        allocator, on CUDA the library handles), taken out and its samples billed at the mean rate
        of the other steps: what `train_run` charges (`billed_seconds`), so a member costs the same in both engines."""
        return billed_seconds(self.seconds, self.warm_seconds, self.samples_seen, self.warm_samples)


@dataclass(frozen=True)
class Stacked:
    """A chunk's training state that lives in tensors."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def chunk_label(specs: list[RunSpec]) -> str:
    return f"ensemble of {len(specs)} ({specs[0].label()}, ...)"


def chunk_resume_line(specs: list[RunSpec], epoch: int, epochs: int) -> str:
    """The line a chunk resumed from its members' checkpoints prints (`harness.resuming`'s wording, which
    the Ray driver matches to bring it back from the worker)."""
    return resuming_line(chunk_label(specs), epoch, epochs, members=True)


class ChunkCheckpoints:
    """Per-member checkpoints of ensemble chunks in `store` at most every `every_s` seconds (at
    epoch ends); `resumed` maps each member a checkpoint resumed to its epoch, `before` lists the
    machines that trained the resumed round's epochs (`harness.machine.trained_before`), and each
    round records them with this process's `machine()` for its own epochs."""

    def __init__(self, store: CheckpointStore, recorder_keys: list[str], every_s: float,
                 machine: Callable[[], dict] = dict) -> None:
        self.store, self.keys, self.every_s, self.machine = store, list(recorder_keys), every_s, machine
        self.last = time.monotonic()
        self.resumed: dict[RunSpec, int] = {}
        self.before: list[dict] = []

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def save(self, specs: list[RunSpec], stacked: Stacked, progress: ChunkProgress) -> None:
        """One round: every member's file, all with one token, renamed into place only once all are
        written (`save_checkpoints`). A round that cannot be written is a warning (a checkpoint only
        saves time after a kill), and the last complete round stays."""
        params = list(stacked.params.values())
        optim = stacked.optimizer.state_dict()
        shared = {"engine": "ensemble", "round": uuid.uuid4().hex, "members": [s.digest() for s in specs],
                  "machine": trained_by(self.before, self.machine(), progress.epoch),
                  **_shared_state(stacked, optim, progress)}

        def member(j: int) -> dict:
            return {**shared, "member": j, "history": progress.history[j], "failed_at": progress.failed.get(j, 0),
                    "params": {n: t[j].detach().clone() for n, t in stacked.params.items()},
                    "buffers": {n: t[j].clone() for n, t in stacked.buffers.items()},
                    "optimizer_rows": _member_rows(optim, params, j)}

        try:
            save_checkpoints((self.store.checkpoint_path(s), s.digest(), member(j), self.keys)
                             for j, s in enumerate(specs))
        except OSError as e:
            warnings.warn(f"cannot write a checkpoint of {chunk_label(specs)} under {self.store.root}/partial "
                          f"({e.strerror or e}); training goes on without it")
        self.last = time.monotonic()

    def resume(self, specs: list[RunSpec], stacked: Stacked, epochs: int) -> ChunkProgress | None:
        """Restore the chunk from its members' last round and say so on stderr, or None (with one
        warning when there were files, but not one round of this chunk) to train from the start."""
        states = [self.store.load_checkpoint(s, self.keys) for s in specs]
        if all(s is None for s in states):
            return None
        try:
            why = _mismatch(states, specs, epochs)
            if why is None:  # then every member has one
                progress = _restore([s for s in states if s is not None], stacked)
                print(chunk_resume_line(specs, progress.epoch, epochs), file=sys.stderr, flush=True)
                self.resumed.update(dict.fromkeys(specs, progress.epoch))
                self.before = trained_before(states[0])
                return progress
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            why = f"they do not fit this chunk's model ({e})"
        warnings.warn(f"checkpoints of {chunk_label(specs)} under {self.store.root}/partial do not match this "
                      f"chunk ({why}); ignoring them and training the chunk from its start")
        return None

    def clear(self, specs: list[RunSpec]) -> None:
        """Remove the files of members that will not be stored (failed ones): `RunStore.put`
        removes the others'."""
        for spec in specs:
            self.store.clear_checkpoint(spec)


def _shared_state(stacked: Stacked, optim: dict, progress: ChunkProgress) -> dict:
    params = list(stacked.params.values())
    return {"epoch": progress.epoch, "scheduler": stacked.scheduler.state_dict(),
            "param_groups": optim["param_groups"], "optimizer_shared": _shared_optimizer(optim, params),
            "samples_seen": progress.samples_seen, "seconds": progress.seconds,
            "warm_seconds": progress.warm_seconds, "warm_samples": progress.warm_samples}


def _is_row(value: Any, param: torch.Tensor) -> bool:
    """Optimizer state shaped like its stacked parameter holds one row per member (momenta);
    anything else is one value for all (Adam's step count)."""
    return isinstance(value, torch.Tensor) and value.shape == param.shape


def _member_rows(optim: dict, params: list[torch.Tensor], j: int) -> dict[int, dict[str, torch.Tensor]]:
    return {i: {k: v[j].clone() for k, v in st.items() if _is_row(v, params[i])} for i, st in optim["state"].items()}


def _shared_optimizer(optim: dict, params: list[torch.Tensor]) -> dict[int, dict[str, Any]]:
    return {i: {k: v for k, v in st.items() if not _is_row(v, params[i])} for i, st in optim["state"].items()}


def _mismatch(states: list[dict | None], specs: list[RunSpec], epochs: int) -> str | None:
    """Why these members' checkpoints are not one round of this chunk, or None."""
    have = [s for s in states if s is not None]
    if len(have) < len(states):
        return f"only {len(have)} of {len(states)} members have a readable one"
    if any(s.get("engine") != "ensemble" for s in have):
        return "a member's checkpoint is of a run trained alone"
    digests = [s.digest() for s in specs]
    if any(s.get("members") != digests or s.get("member") != j for j, s in enumerate(have)):
        return "they were written by a chunk of other members"
    if len({s.get("round") for s in have}) != 1:
        return "they are of different epochs, as a kill while they were written leaves"
    if not 0 < int(have[0]["epoch"]) < epochs:
        return f"epoch {have[0]['epoch']} is outside 1..{epochs - 1}"
    return None


def _stack(rows: list[torch.Tensor], like: torch.Tensor, what: str) -> torch.Tensor:
    out = torch.stack(rows)
    if out.shape != like.shape or out.dtype != like.dtype:
        raise ValueError(f"{what} is {tuple(out.shape)} {out.dtype}, the chunk's {tuple(like.shape)} {like.dtype}")
    return out


def _restore(states: list[dict], stacked: Stacked) -> ChunkProgress:
    """Put one round of checkpoints into the stacked tensors, optimizer and schedule. Everything is
    read and checked before the first change (the optimizer checks its groups before it loads), so
    a round that does not fit leaves the fresh chunk as it was."""
    first = states[0]
    progress = ChunkProgress(
        epoch=int(first["epoch"]), history=[list(s["history"]) for s in states],
        failed={j: int(s["failed_at"]) for j, s in enumerate(states) if s["failed_at"]},
        samples_seen=int(first["samples_seen"]), seconds=float(first["seconds"]),
        warm_seconds=float(first["warm_seconds"]), warm_samples=int(first["warm_samples"]))
    if set(first["params"]) != set(stacked.params) or set(first["buffers"]) != set(stacked.buffers):
        raise ValueError("other parameter names")
    new_params = {n: _stack([s["params"][n] for s in states], p, n) for n, p in stacked.params.items()}
    new_buffers = {n: _stack([s["buffers"][n] for s in states], b, n) for n, b in stacked.buffers.items()}
    params = list(stacked.params.values())
    optim_state: dict[int, dict[str, Any]] = {}
    for i, shared in first["optimizer_shared"].items():
        rows = {k: _stack([s["optimizer_rows"][i][k] for s in states], params[i], f"optimizer {k}")
                for k in first["optimizer_rows"].get(i, {})}
        optim_state[int(i)] = {**shared, **rows}
    stacked.optimizer.load_state_dict({"state": optim_state, "param_groups": first["param_groups"]})
    with torch.no_grad():
        for n, p in stacked.params.items():
            p.copy_(new_params[n])  # in place: keeps the stacked layout (`stack_members`)
        for n, b in stacked.buffers.items():
            b.copy_(new_buffers[n])
    for p in params:  # momenta in their parameter's memory layout, as the optimizer makes them
        st = stacked.optimizer.state.get(p, {})
        for k, v in st.items():
            if _is_row(v, p):
                st[k] = torch.empty_like(p).copy_(v)
    stacked.scheduler.load_state_dict(first["scheduler"])
    return progress
