"""One global batch from every process of a DDP job, for `SampleTracker.update(..., gather=True)`
and the Lightning and Hugging Face callbacks (`harness.integrations._common.DistributedRecorder`).

Each rank trains its own shard of a batch, so a tracker fed only its rank's shard records about one
sample in world size per epoch. The gather concatenates every rank's (indices, losses, logits,
labels) in rank order, so every rank records the same global batch and holds the same record.

Ranks may hold batches of unequal size (a last batch with no rows on some rank, Accelerate's
`even_batches=False`, a sampler of one's own): `all_gather` needs equal shapes, so the rows are
padded to the largest batch and trimmed again. Each rank first shares a small header (rows, classes,
which tensors it passes and their dtypes, whether its batch is usable); every rank reads the same
headers, so a batch that cannot be gathered raises on every rank alike rather than leaving the other
ranks waiting in a collective that never completes, and tensors of unequal length within one rank
(which would pair one sample's loss with another's index across the concatenation) are refused.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import torch

from harness.errors import HarnessError

__all__ = ["Gathered", "gather_batch", "world_size"]

#: dtype codes of the header: every dtype of torch, in one order on every rank (-1: not passed;
#: len(_DTYPES): not a tensor). A short list left uint16 labels out of one rank's promotion but not of
#: another's: one rank raised in the promotion while the other waited in the labels' all_gather.
_DTYPES = tuple(sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str))
_NAMES = ("losses", "logits", "labels")


class Gathered(NamedTuple):
    """The global batch, every rank's rows in rank order, on the device of the losses (else logits)
    passed; `world` the number of processes (1: the tensors as given, untouched)."""

    indices: Any
    losses: torch.Tensor | None
    logits: torch.Tensor | None
    labels: torch.Tensor | None
    world: int


def world_size() -> int:
    """The default process group's size; 1 without torch.distributed or an initialised group."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_batch(indices: Any, *, losses: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> Gathered:
    """Every rank's batch, concatenated in rank order (a collective: every rank calls it once per
    step, a rank without samples with empty tensors). Indices may be a tensor, a list or a numpy
    array; they come back as int64 on the device of the losses (else the logits), as do the rest.
    Under NCCL, CPU tensors travel through the rank's current CUDA device and come back to theirs."""
    world = world_size()
    if world == 1:
        return Gathered(indices, losses, logits, labels, 1)
    ref = losses if isinstance(losses, torch.Tensor) else logits if isinstance(logits, torch.Tensor) else None
    device = ref.device if ref is not None else torch.device("cpu")
    idx, problem = _local_batch(indices, losses, logits, labels, ref)
    rows = idx.shape[0] if idx is not None else 0
    tensors = (losses, logits, labels)
    classes = logits.shape[1] if problem is None and logits is not None else -1
    via = _collective_device(device)
    header = torch.tensor([int(problem is not None), rows, classes, *(_code(t) for t in tensors)], device=via)
    headers = torch.stack(_all_gather(header, world)).cpu()
    _check_headers(headers, problem)
    dtypes = _common_dtypes(headers)  # from the headers alone: every rank decides alike, or raises alike
    assert idx is not None  # no rank's batch had a problem
    counts = headers[:, 1].tolist()
    out: list[torch.Tensor | None] = [_gather_rows(idx.to(via, torch.int64), counts, world).to(device)]
    for t, dtype in zip(tensors, dtypes):
        if t is None or dtype is None:
            out.append(None)
            continue
        out.append(_gather_rows(t.detach().to(via, dtype), counts, world).to(device))
    return Gathered(out[0], out[1], out[2], out[3], world)


def _local_batch(indices: Any, losses: Any, logits: Any, labels: Any,
                 ref: torch.Tensor | None) -> tuple[torch.Tensor | None, str | None]:
    """This rank's indices as a 1-D tensor on `ref`'s device, or why its batch cannot be gathered."""
    if ref is None:
        return None, "the batch needs per-sample losses= (or logits= and labels=)"
    try:
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
    except (TypeError, ValueError, RuntimeError):
        idx = None
    if idx is None or idx.dim() != 1 or (idx.numel() and (idx.dtype.is_floating_point or idx.dtype.is_complex
                                                          or idx.dtype == torch.bool)):
        what = f"{idx.dtype} {tuple(idx.shape)}" if idx is not None else type(indices).__name__
        return None, (f"indices must be a 1-D integer tensor, list or array of sample indices, got {what}; let "
                      f"the dataset return its index (harness.integrations.WithIndex)")
    rows = idx.shape[0]
    for name, t in zip(_NAMES, (losses, logits, labels)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            return None, f"{name} must be a torch tensor, got {type(t).__name__}"
        want = 2 if name == "logits" else 1
        if t.dim() != want or t.shape[0] != rows:
            shape = f"({rows},)" if want == 1 else f"({rows}, classes)"
            hint = "; compute the loss with reduction='none'" if name == "losses" else ""
            return None, f"{name} has shape {tuple(t.shape)} but must be {shape} for {rows} indices{hint}"
    return idx.to(ref.device), None


def _check_headers(headers: torch.Tensor, problem: str | None) -> None:
    """Raise, on every rank alike, when some rank's batch cannot be gathered or the ranks disagree on
    which tensors they pass or on the logits' classes."""
    bad = [r for r, h in enumerate(headers.tolist()) if h[0]]
    if problem is not None:
        raise HarnessError(f"update(gather=True): {problem}")
    if bad:
        raise HarnessError(f"update(gather=True): the batch of rank(s) {bad} cannot be gathered (their error says "
                           f"why); every rank raises, so that none waits for the others")
    for k, name in enumerate(_NAMES):
        passed = {int(c) >= 0 for c in headers[:, 3 + k].tolist()}
        if len(passed) > 1:
            ranks = [r for r, c in enumerate(headers[:, 3 + k].tolist()) if c >= 0]
            raise HarnessError(f"update(gather=True): only rank(s) {ranks} passed {name}=; every rank must pass the "
                               f"same tensors (a rank without samples passes empty ones)")
    classes = {int(c) for c in headers[:, 2].tolist() if c >= 0}
    if len(classes) > 1:
        raise HarnessError(f"update(gather=True): the ranks' logits have different numbers of classes "
                           f"{sorted(classes)}; every rank's logits must be (B, classes) of one model")


def _code(t: Any) -> int:
    """The header's code of a tensor's dtype. Anything else is coded too, not read: a list passed as
    labels= raised here on its rank alone, before the header's collective, and the others waited."""
    if t is None:
        return -1
    return _DTYPES.index(t.dtype) if isinstance(t, torch.Tensor) else len(_DTYPES)


def _common_dtypes(headers: torch.Tensor) -> list[torch.dtype | None]:
    """The dtype each tensor is gathered in, so that every rank sends one dtype: the promotion of the
    ranks' dtypes (bf16 on one rank and float32 on another gather as float32), of the ranks with rows
    (a rank without samples passing `torch.empty(0)` as labels made every rank's labels float32, then
    refused as not integer); None: not passed. Dtypes without a promotion (uint16 and int64) raise."""
    has_rows = [int(r) > 0 for r in headers[:, 1].tolist()]
    dtypes: list[torch.dtype | None] = []
    for k, name in enumerate(_NAMES):
        codes = [int(c) for c in headers[:, 3 + k].tolist()]
        if codes[0] < 0:  # `_check_headers`: passed by every rank or by none
            dtypes.append(None)
            continue
        used = sorted({_DTYPES[c] for c, rows in zip(codes, has_rows) if rows} or {_DTYPES[c] for c in codes},
                      key=str)
        try:
            dtypes.append(functools.reduce(torch.promote_types, used))
        except RuntimeError as e:
            raise HarnessError(f"update(gather=True): the ranks pass {name} of dtypes {[str(d) for d in used]}, "
                               f"which torch cannot promote to one ({e}); pass one dtype on every rank "
                               f"(labels as int64: labels.long())") from None
    return dtypes


def _collective_device(device: torch.device) -> torch.device:
    """NCCL gathers CUDA tensors only: CPU tensors (the DataLoader's indices and labels) go through the
    rank's current CUDA device."""
    if device.type == "cpu" and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _all_gather(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every rank's `t`, of one shape on every rank, in rank order; contiguous, as the backends want
    (`empty_like` of a transposed tensor would keep its strides)."""
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    torch.distributed.all_gather(parts, t)
    return parts


def _gather_rows(t: torch.Tensor, counts: list[int], world: int) -> torch.Tensor:
    """Concatenate `t` (B, ...) of every rank in rank order; B (`counts`, by rank) may differ."""
    top = max(counts)
    if t.shape[0] < top:  # all_gather needs equal shapes: pad, then trim
        t = torch.cat([t, t.new_zeros((top - t.shape[0], *t.shape[1:]))])
    parts = _all_gather(t, world)
    return torch.cat([p[:c] for p, c in zip(parts, counts)])
