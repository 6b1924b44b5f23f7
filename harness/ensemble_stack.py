"""Stacked models for the batched ensemble (`harness.ensemble`): stacking K members' parameters
for `torch.func`, the float32 batch norm a bf16 ensemble needs on CUDA, what one member's step
costs (FLOPs, the largest activation), which models batching pays for on a CPU and how many share a
chunk there, the once-normalised training set, and held-out accuracy of every member at once.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from harness.model_registry import MODELS, Factory, Shape, as_shape
from harness.models import build_model
from harness.prepared import PreparedData
from harness.runspec import RunSpec
from harness.timing import count_flops
from harness.training import count_correct


def draws_random(model: str, inputs: torch.Tensor | None = None) -> bool:
    """Whether `model` draws random numbers in a training forward (dropout) on inputs like
    `inputs` (a training set; None: 32x32 images). Such a model cannot be a member: ``vmap``
    refuses random draws (a RuntimeError deep in the worker), and allowed, they would not be the
    draws `train_run` makes. A model that cannot be built or run for the probe counts as not.
    Cached by factory, so a model registered anew under its name (a notebook) is probed anew."""
    shape = (3, 32, 32) if inputs is None else tuple(inputs.shape[1:])
    return _draws_random(MODELS.get(model).factory, as_shape(shape), inputs is not None and inputs.dtype == torch.int64)


@cache
def _draws_random(factory: Factory, shape: Shape, tokens: bool) -> bool:
    """One stacked member's training forward under vmap, on the meta device (nothing allocated,
    nothing computed), on two samples (batch norm needs more than one)."""
    try:
        with torch.device("meta"):
            net = factory(shape, 10).train()
            params = {k: v.unsqueeze(0) for k, v in net.named_parameters()}
            buffers = {k: v.unsqueeze(0) for k, v in net.named_buffers()}
            x = torch.zeros((1, 2, *shape), dtype=torch.int64 if tokens else torch.float32)
            vmap(lambda p, b, xb: functional_call(net, (p, b), (xb,)))(params, buffers, x)
    except RuntimeError as e:
        return "randomness" in str(e)
    except Exception:
        return False
    return False


@cache
def has_conv(model: str) -> bool:
    """Stacked convolutions run as one grouped convolution, which the CPU kernels serve far worse
    than K ordinary ones: 8 small_cnn_gn members on 350 CIFAR-10 images trained 2.3x slower batched
    than one at a time (2 cores). Linear layers become batched matmuls, which pay everywhere."""
    try:
        with torch.device("meta"):
            net = build_model(model, (3, 32, 32), 10)
    except Exception:  # a plugin model that cannot take 32x32 images: do not guess, train singly
        return True
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in net.modules())


#: Stacked parameters per chunk on a CPU (16 MB of float32). A step there is compute-bound, so
#: batching buys fewer thread synchronisations rather than fewer FLOPs, and chunks keep the stacked
#: parameters, gradients and momenta near the caches: 64 digits MLPs of 300k parameters took
#: ~4x longer in one chunk than in chunks of 16 (2 cores). On a GPU all members go at once.
CPU_PARAMS_PER_CHUNK = 4_000_000


#: Share of the GPU's free memory one ensemble chunk may plan for; the rest covers the allocator's
#: fragmentation, convolution workspaces and the eval pass's (K, N, C) probabilities.
GPU_MEMORY_SHARE = 0.6


def members_that_fit(free_bytes: int, member_bytes: int, share: float = GPU_MEMORY_SHARE) -> int:
    """How many members' training steps fit into `share` of `free_bytes` (at least one)."""
    return max(1, int(share * free_bytes) // max(1, member_bytes))


def cpu_chunk(spec: RunSpec, data: PreparedData) -> int:
    """Members per chunk on a CPU: about CPU_PARAMS_PER_CHUNK stacked parameters."""
    with torch.device("meta"):  # counts parameters without allocating or drawing random numbers
        model = build_model(spec.model, tuple(data.x.shape[1:]), data.num_classes)
    return max(1, CPU_PARAMS_PER_CHUNK // sum(p.numel() for p in model.parameters()))


def largest_activation(model: nn.Module, x: torch.Tensor) -> int:
    """Elements per sample of the largest output of any layer of `model` on the batch `x`."""
    largest = [int(x[0].numel())]

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() > 0 and len(output):
            largest[0] = max(largest[0], output.numel() // len(output))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return largest[0]


#: The whole training set is normalised once per ensemble when its float copy stays below this;
#: per-batch normalisation of K batches costs a tenth of a small MLP ensemble's step.
NORMALIZED_BYTES = 256 * 2**20


def normalized_inputs(data: PreparedData) -> torch.Tensor | None:
    """The whole training set normalised once, for every epoch's batches; None when its float copy would
    pass NORMALIZED_BYTES (the engine then normalises each batch as `train_run` does)."""
    if data.x.numel() * 4 > NORMALIZED_BYTES:
        return None
    return data.inputs(torch.arange(data.n, device=data.x.device))


def stack_members(models: list[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked parameters (leaf tensors the optimizer updates) and buffers.

    Stacked matrices (linear weights, (K, out, in)) are stored column-major: the batched matmul
    under vmap computes the weight gradient as (K, in, out), and a parameter with that same
    memory layout takes the gradient as is instead of copying it into row-major order every
    step (a third of the step time on CPU). Values, and so the optimizer's arithmetic, are unchanged.
    """
    params, buffers = stack_module_state(models)
    out = {}
    for name, p in params.items():
        p = p.detach()
        if p.dim() == 3:
            p = p.transpose(1, 2).contiguous().transpose(1, 2)
        out[name] = p.requires_grad_()
    return out, buffers


#: Each member's rows of a training batch are padded to a multiple of this (`aligned_rows`).
#: A member's share of a stacked (K, b, C) activation starts at j * b * C floats, and the CPU
#: kernels round a share that starts off a 64-byte boundary differently: with b odd (batch size 63,
#: or a last batch of 33) a member's numbers depended on its place in the chunk, i.e. on which other
#: runs happened to be pending. Zero rows, dropped before the loss, keep every share aligned.
ROW_ALIGN = 16


def aligned_rows(xb: torch.Tensor) -> torch.Tensor:
    """`xb` (K, b, ...) with zero rows appended up to a multiple of ROW_ALIGN rows per member."""
    short = -xb.shape[1] % ROW_ALIGN
    return torch.cat([xb, xb.new_zeros((xb.shape[0], short, *xb.shape[2:]))], 1) if short else xb


def aligned_count(n: int, batch: int) -> int:
    """Rows a pass over `n` samples in batches of `batch` computes per member, padding included."""
    return sum(-(-min(batch, n - s) // ROW_ALIGN) * ROW_ALIGN for s in range(0, n, batch))


def has_batch_norm(model: nn.Module) -> bool:
    """Batch norm normalises with its batch's statistics, so padded rows would change a member's
    training: such models train unpadded (their rows stay as the batch size makes them)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def float32_batch_norm(skeleton: nn.Module) -> None:
    """Batch norm layers of a bf16 ensemble on CUDA normalise a float32 copy of their input and
    hand back the input's dtype.

    For one model, cuDNN's batch norm takes a bf16 input with float32 running statistics (it
    computes in float32 and returns bf16). Under vmap the batched backward calls the kernel
    without the affine weight, and it then demands running statistics in the input's dtype
    ("Expected running_mean to have type BFloat16 but got Float": torch 2.11 on an H200). A
    float32 input with float32 statistics, rounded back to bf16 on the way out, is the arithmetic
    the single-model kernel does, and it keeps the running statistics float32 as in train_run.
    """
    for module in skeleton.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            plain = module.forward

            def forward(x: torch.Tensor, plain=plain) -> torch.Tensor:
                return plain(x.float()).to(x.dtype)

            module.forward = forward  # type: ignore[method-assign,assignment]  # a wrapper per instance


def plain_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training step of one member, counted on an unbatched copy. Counting under
    vmap would charge what batching adds (stacked convolutions also compute the first layer's
    input gradient), so a run's FLOPs would depend on how it was trained, not on what it is."""
    flops: list[int] = []
    with count_flops(flops):
        nn.functional.cross_entropy(model(x), y).backward()
    return flops[0]


def each_member(forward, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
                ) -> torch.Tensor:
    """Logits (K, b, ...) of every member on the same inputs `x` (b, ...), each member given its own
    copy, its rows aligned (`aligned_rows`). Shared inputs (vmap in_dims None) made a member's logits
    depend on its place in the chunk (the CPU kernels round a shared-input batched matmul differently
    per column block: up to 2e-6 in phi on digits), so `--seeds 2` in one go and seed by seed gave
    different privacy scores; with its own aligned copy a member computes what a chunk of one
    computes. Eval mode only: zero rows would enter batch norm's training statistics."""
    k, b = next(iter(params.values())).shape[0], x.shape[0]
    return forward(params, buffers, aligned_rows(x.expand(k, *x.shape).contiguous()))[:, :b]


@torch.no_grad()
def members_test_accuracy(forward, params, buffers, data: PreparedData, batch: int) -> list[float]:
    """Held-out accuracy of each member (`each_member`)."""
    x, y = data.test_inputs()
    k = next(iter(params.values())).shape[0]
    if len(y) == 0:
        return [float("nan")] * k
    correct = count_correct(lambda xb: each_member(forward, params, buffers, xb), x, y, batch)
    return (correct.double() / len(y)).tolist()
