"""Mixed precision and memory format for the training step, and the rule that keeps records exact.

bf16 autocast and channels-last are what let convolutions run on a GPU's tensor cores; both change
a run's numbers slightly, so they are recipe fields (part of the run's address), default off so
CPU results stay bit-stable.

The float32 rule: autocast covers the training step's forward only. Everything a recorder writes
stays float32:
- the per-sample training loss is computed from the logits cast to float32 (`per_sample_loss`),
  so csl and the other training-pass signals are float32 whatever the forward ran in;
- weights stay float32 (autocast casts per op, the optimizer steps float32 master weights);
- eval passes, input gradients and curvature finite differences run outside `autocast` (or inside
  `full_precision`), in float32: a bf16 forward has ~3 significant digits, far coarser than the
  finite-difference steps of curvature or the small input-gradient norms learning time averages.
- on a GPU, float32 convolutions run in TF32 by PyTorch's default (10-bit mantissa operands). That
  is kept for training and eval passes, and for input gradients (a CPU emulation of TF32 convs
  moved a small CNN's input-gradient norms by 0.13 %), but curvature differences two gradients a
  step h = 1e-3 apart: the same emulation gave it a median 1.1 % error (Spearman 0.991 against
  float64), so its passes run in IEEE float32 (`ieee_float32`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import torch
from torch import nn

from harness.errors import HarnessError

PRECISIONS = ("fp32", "bf16")

M = TypeVar("M", nn.Module, torch.Tensor)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The context for a training forward: bf16 autocast on cuda or cpu; nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise HarnessError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")


def full_precision(device: torch.device) -> AbstractContextManager:
    """Switches autocast off inside an autocast region: for recorder work that must be float32."""
    return torch.autocast(device_type=device.type, enabled=False)


@contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 convolutions and matmuls in IEEE float32 instead of TF32 inside the block,
    then the previous settings back. Where torch has the `fp32_precision` flags (2.9+) only they are
    touched: setting them and reading the legacy `allow_tf32` ones in between raises there; older
    torch has only the legacy flags. Nothing on a CPU."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    off: str | bool  # the new flags take a precision's name, the legacy ones a bool
    if conv is not None and hasattr(conv, "fp32_precision"):
        flags: tuple[Any, ...] = (conv, torch.backends.cuda.matmul)
        name, off = "fp32_precision", "ieee"
    else:
        flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
        name, off = "allow_tf32", False
    saved = [getattr(f, name) for f in flags]
    for f in flags:
        setattr(f, name, off)
    try:
        yield
    finally:
        for f, value in zip(flags, saved):
            setattr(f, name, value)


def channels_last(obj: M) -> M:
    """A module's 4-D weights, or a 4-D input batch, in NHWC memory format; anything else as is.

    Only the layout changes (the same logical tensor), so an MLP or a 2-D batch passes through."""
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=torch.channels_last)
    return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample, in float32 even when the logits came out of a bf16 forward."""
    return nn.functional.cross_entropy(logits.float(), labels, reduction="none")
