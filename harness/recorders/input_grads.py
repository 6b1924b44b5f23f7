"""Per-sample input gradients ∇ₓℓ(w_t, z) at every epoch checkpoint (eval mode, no augmentation).

One recorder serves loss sensitivity, learning time and CSG: they all request the identical
`input_grads` recorder, so the planner merges them and the gradients are computed once per epoch.
`every=k` computes them at every k-th checkpoint and the last only (the others stay NaN): on full
CIFAR-10 on a CPU one pass costs about half a training epoch, so scoring every epoch would more than
double a run. `every=1` is the default and its request carries no parameter, so runs stored before
the option existed keep their addresses.

Exactness: the gradient of the *sum* of per-sample losses w.r.t. the batch input is, row by row,
each sample's own input gradient, because in eval mode no sample's output depends on another's
input. Differentiating the batch *mean* (as the released code did) divides every gradient by the
batch size, so a short last batch comes out larger than the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.recorders.base import Recorder, RecorderRequest, RunContext, eval_mode, register_recorder


def per_sample_input_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇ₓℓ for every row of x, per-sample losses), both detached.

    The caller puts the model in eval mode (`eval_mode`): in train mode batch norm couples the
    samples of a batch and the rows are no longer per-sample gradients. Only the input requires a
    gradient (`autograd.grad` w.r.t. x), so no parameter gradient is computed or accumulated.
    """
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        # the model sees a non-leaf view: torch's FlopCounterMode (used to charge recorders) hooks
        # module inputs in a way that autograd.grad rejects when that input is a leaf
        losses = nn.functional.cross_entropy(model(leaf.view_as(leaf)).float(), y, reduction="none")
        (grads,) = torch.autograd.grad(losses.sum(), leaf)
    return grads, losses.detach()


def every_kth_and_last(epoch: int, every: int, epochs: int | None) -> bool:
    """Whether the checkpoint after `epoch` (0-based) is scored: every `every`-th and always the last,
    so a proxy summing or averaging over checkpoints always sees the final model."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def input_grads_request(every: int = 1) -> RecorderRequest:
    """The request for input gradients at every `every`-th checkpoint; `every=1` has no parameter."""
    return RecorderRequest.of("input_grads", **({"every": int(every)} if int(every) != 1 else {}))


@register_recorder
class InputGrads(Recorder):
    name = "input_grads"
    description = "per-sample input-gradient norms (l1, l2, squared l2) at every epoch checkpoint, eval mode"
    phases = (1,)
    #: called twice with the same arguments, a call leaves what one call leaves, so the FLOP counter
    #: gets an execution of its own (`harness.timing.Meter`)
    repeatable = True

    def __init__(self, ctx: RunContext, every: int = 1) -> None:
        super().__init__(ctx, **({"every": every} if every != 1 else {}))
        self.every = int(every)
        for s in ("l1", "l2", "sq"):
            self.buffer(s, (ctx.epochs, ctx.n), fill=float("nan"))
        self.all_idx = torch.arange(ctx.n, device=ctx.device)

    def active(self, epoch: int, phase: int) -> bool:
        return super().active(epoch, phase) and every_kth_and_last(epoch, self.every, self.ctx.epochs)

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        data, bs = self.ctx.data, self.ctx.eval_batch_size
        assert data is not None and model is not None  # only the harness's runs request it, and they have both
        with eval_mode(model):
            for start in range(0, self.ctx.n, bs):
                idx = self.all_idx[start : start + bs]
                grads, _ = per_sample_input_grads(model, data.inputs(idx), data.y[idx])
                flat = grads.flatten(1)
                sq = (flat * flat).sum(1)
                self.buffers["l1"][epoch].index_copy_(0, idx, flat.abs().sum(1))
                self.buffers["sq"][epoch].index_copy_(0, idx, sq)
                self.buffers["l2"][epoch].index_copy_(0, idx, sq.sqrt())
