"""Input-loss curvature (Garg et al. 2024) by a Hutchinson-style finite difference.

At each scored checkpoint, eval mode: score(x) = mean over n Rademacher vectors v of
‖∇ₓℓ(x + h·v) − ∇ₓℓ(x)‖₂. Cost per scored epoch: n + 1 input-gradient computations over the
training set (the base gradient and one per draw), i.e. 2(n + 1) forward+backward passes.

The finite-difference core takes any gradient function, so it can be checked on a quadratic loss,
where ∇ℓ(x + hv) − ∇ℓ(x) = hAv exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.precision import ieee_float32
from harness.recorders.base import Recorder, RunContext, eval_mode, register_recorder
from harness.recorders.input_grads import every_kth_and_last, per_sample_input_grads

GradFn = Callable[[torch.Tensor], torch.Tensor]


def rademacher(shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """±1 entries with equal probability, drawn on `device` from `generator` (no host round-trip)."""
    bits = torch.randint(0, 2, tuple(shape), generator=generator, device=device)
    return bits.float().mul_(2).sub_(1)


def finite_difference_curvature(
    grad_fn: GradFn, x: torch.Tensor, n: int, h: float, generator: torch.Generator
) -> torch.Tensor:
    """Per-row mean over n Rademacher draws v of ‖grad_fn(x + h·v) − grad_fn(x)‖₂.

    `grad_fn` maps a batch (B, ...) to per-row gradients of the same shape. Draws are taken in
    order v_1..v_n, each of x's full shape, from `generator`.
    """
    base = grad_fn(x).flatten(1)
    total = torch.zeros(x.shape[0], device=x.device, dtype=base.dtype)
    for _ in range(n):
        v = rademacher(x.shape, generator, x.device).to(x.dtype)
        total += (grad_fn(x + h * v).flatten(1) - base).norm(dim=1)
    return total / n


def curvature_seed(run_seed: int, epoch: int) -> int:
    """Seed of the Rademacher draws at one checkpoint: a function of (run seed, epoch) only."""
    return (run_seed * 1_000_003 + epoch * 7919 + 104_729) % (2**63 - 1)


@register_recorder
class Curvature(Recorder):
    name = "curvature"
    description = "finite-difference input-loss curvature (n Rademacher draws, step h) at scored checkpoints"
    phases = (1,)
    #: called twice with the same arguments, a call leaves what one call leaves (its draws are seeded
    #: by run and epoch), so the FLOP counter gets an execution of its own (`harness.timing.Meter`)
    repeatable = True

    def __init__(self, ctx: RunContext, n: int = 10, h: float = 1e-3, every: int = 1) -> None:
        super().__init__(ctx, n=n, h=h, every=every)
        self.n, self.h, self.every = int(n), float(h), int(every)
        self.buffer("curvature", (ctx.epochs, ctx.n), fill=float("nan"))
        self.all_idx = torch.arange(ctx.n, device=ctx.device)
        self.run_seed = ctx.seed

    def active(self, epoch: int, phase: int) -> bool:
        return super().active(epoch, phase) and every_kth_and_last(epoch, self.every, self.ctx.epochs)

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        if not self.active(epoch, phase):  # a second phase (SSFT-style run) must not overwrite phase 1
            return
        data, bs = self.ctx.data, self.ctx.eval_batch_size
        assert data is not None and model is not None  # only the harness's runs request it, and they have both
        gen = torch.Generator(device=self.ctx.device).manual_seed(curvature_seed(self.run_seed, epoch))
        with eval_mode(model), ieee_float32(self.ctx.device):
            for start in range(0, self.ctx.n, bs):
                idx = self.all_idx[start : start + bs]
                y = data.y[idx]

                def grad_fn(x: torch.Tensor, y: torch.Tensor = y) -> torch.Tensor:
                    return per_sample_input_grads(model, x, y)[0]

                scores = finite_difference_curvature(grad_fn, data.inputs(idx), self.n, self.h, gen)
                self.buffers["curvature"][epoch].index_copy_(0, idx, scores)
