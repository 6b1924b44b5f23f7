"""Recorders: per-sample signals written down during a run.

A recorder owns device buffers indexed by sample; the training loop hands it each batch's
(indices, logits, per-sample loss, labels) after the optimizer step, or calls it at each epoch
checkpoint. Buffers are written with index ops only: no host sync, no per-sample Python.
The loop times every recorder apart from training so each proxy is charged only what it adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from harness.prepared import PreparedData
from harness.registry import Registry


@dataclass(frozen=True)
class RecorderRequest:
    """A recorder by name with its parameters; hashable so the planner can take unions."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(name: str, **params: Any) -> RecorderRequest:
        return RecorderRequest(name, tuple(sorted(params.items())))

    @property
    def key(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.params)}]"


@dataclass
class RunContext:
    """What a recorder may know about the run it is attached to."""

    data: PreparedData
    epochs: int  # epochs of the (first) training phase; buffers are (epochs, N)
    train_idx: torch.Tensor  # samples the first phase trains on
    batch_size: int
    device: torch.device
    seed: int = 0  # the run's seed, for recorders that draw random numbers

    @property
    def n(self) -> int:
        return self.data.n

    @property
    def eval_batch_size(self) -> int:
        """Passes without an optimizer step take bigger batches: fewer launches, same results."""
        return 4 * self.batch_size


class Recorder:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    on_batches: ClassVar[bool] = False  # wants on_batch during training passes
    phases: ClassVar[tuple[int, ...]] = (1,)

    def __init__(self, ctx: RunContext, **params: Any) -> None:
        self.ctx = ctx
        self.params = params
        self.buffers: dict[str, torch.Tensor] = {}

    def on_batch(
        self, epoch: int, idx: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Training pass, after the step; tensors are detached."""

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module) -> None:
        """At the checkpoint after `epoch` (0-based, within `phase`)."""

    def active(self, epoch: int, phase: int) -> bool:
        """Whether `on_epoch_end` does work at this checkpoint; cost is charged per active call."""
        return phase in self.phases

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, fill: float = 0.0):
        self.buffers[name] = torch.full(shape, fill, dtype=dtype, device=self.ctx.device)
        return self.buffers[name]

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in self.buffers.items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            self.buffers[k].copy_(torch.from_numpy(v))


RECORDERS: Registry[type[Recorder]] = Registry("recorder")

#: The final model's eval pass over every training sample: held-out probabilities of fold models,
#: the stability reference's correctness, final loss. The one definition every user imports.
EVAL_LAST = RecorderRequest.of("eval_pass", epochs="last")


def register_recorder(cls: type[Recorder]) -> type[Recorder]:
    """Class decorator; a second recorder under a taken name is an error, not a silent overwrite."""
    RECORDERS.register(cls.name, cls)
    return cls


def build_recorder(request: RecorderRequest, ctx: RunContext) -> Recorder:
    return RECORDERS.get(request.name)(ctx, **dict(request.params))


def eval_batches(
    model: nn.Module, data: PreparedData, idx: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Eval-mode logits over samples `idx`, no augmentation, no grad; restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(idx), batch_size):
                b = idx[start : start + batch_size]
                yield b, model(data.inputs(b))
    finally:
        model.train(was_training)
