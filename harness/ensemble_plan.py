"""Which runs may train as one batched ensemble (`harness.ensemble`), and how many members go together.

The planner asks this before any training: `can_ensemble` says whether a spec can be a member at all,
`ensemble_chunks` groups members into the chunks that become one job each. Chunk sizes come from the
device: a CPU bounds the stacked parameters (`cpu_chunk`), a GPU its free memory measured on one member's
step (`_gpu_chunk`) and the element limit of one stacked activation (MAX_STACKED_ELEMENTS,
`members_per_step`), which also bounds the engine's eval batches (`stacked_batch`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from harness.ensemble_stack import (
    GPU_MEMORY_SHARE,
    aligned_count,
    cpu_chunk,
    draws_random,
    has_conv,
    largest_activation,
    members_that_fit,
)
from harness.models import MODELS, build_model
from harness.precision import autocast
from harness.prepared import PreparedData
from harness.recorders import EVAL_LAST
from harness.runspec import RunSpec
from harness.subsets import subset_indices

SUPPORTED = frozenset({EVAL_LAST})


def can_ensemble(spec: RunSpec, requests, device: torch.device | str | None = None,
                 inputs: torch.Tensor | None = None) -> bool:
    """True when `spec` can be one member of a batched ensemble with these recorders, its model
    draws no random numbers in training on `inputs` (the training set; `draws_random`), and, when
    `device` is given, batching pays there: on a CPU only for models without convolutions."""
    if spec.model not in MODELS or spec.then_on is not None or not set(requests) <= SUPPORTED:
        return False
    if draws_random(spec.model, inputs):
        return False
    return device is None or torch.device(device).type != "cpu" or not has_conv(spec.model)


#: Elements one stacked activation may hold: under vmap a layer's output for K members is one tensor
#: (K x batch x per-sample elements), and cuDNN indexes with 32-bit integers (a 16-member ResNet-18 eval
#: pass of 2,048 images made a 2^31-element batch-norm input: CUDNN_STATUS_NOT_SUPPORTED on an H200).
MAX_STACKED_ELEMENTS = 2**31 - 1


def stacked_batch(members: int, batch: int, per_sample: int, align: int = 1) -> int:
    """The largest batch (at most `batch`, at least 1) at which `members` stacked activations of `per_sample`
    elements each stay within MAX_STACKED_ELEMENTS, a multiple of `align` for a pass that pads rows to it
    (`each_member`): 2,047 eval images of 16 ResNet-18s, padded to 2,048, made the refused 2^31 again."""
    fit = MAX_STACKED_ELEMENTS // max(1, members * per_sample)
    return max(1, min(batch, fit - fit % align if fit >= align else fit))


def _gpu_chunk(spec: RunSpec, data: PreparedData, gpu_fraction: float = 1.0) -> int:
    """Members per chunk on a GPU, from one member's measured training step: peak memory of a
    forward and backward at the recipe's batch size, plus its parameters' optimizer state.
    Small models all go at once; a ResNet-18 at batch 512 needs a few GB each, so 64 of them
    cannot share one device. `gpu_fraction` is the share of the GPU one job gets (Ray's
    `--gpus-per-run`): four jobs at 0.25 each plan for a quarter of the free memory."""
    device = data.x.device
    if device.type != "cuda":
        return 1 << 30  # no allocator statistics to ask: all at once, as before
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, tuple(data.x.shape[1:]), data.num_classes).to(device)
    idx = torch.arange(min(spec.recipe.batch_size, data.n), device=device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with autocast(device, spec.recipe.precision):
        logits = model(data.inputs(idx))
    nn.functional.cross_entropy(logits.float(), data.y[idx]).backward()
    peak = torch.cuda.max_memory_allocated(device) - base
    state = 3 * sum(p.numel() * p.element_size() for p in model.parameters())  # grads, 2 Adam moments
    del logits
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    fit = members_that_fit(free, peak + state, GPU_MEMORY_SHARE * min(1.0, gpu_fraction))
    # the training step's stacked activations must stay indexable too (only an eval pass can shrink its batch)
    per_sample = largest_activation(model.eval(), data.inputs(idx[:1]))
    return max(1, min(fit, members_per_step(len(idx), per_sample)))


def members_per_step(batch: int, per_sample: int) -> int:
    """Members whose stacked training activations stay within MAX_STACKED_ELEMENTS at `batch` rows each,
    padded as models without batch norm train them (`aligned_rows`)."""
    return MAX_STACKED_ELEMENTS // max(1, aligned_count(batch, batch) * per_sample)


def ensemble_chunks(specs: Sequence[RunSpec], data: PreparedData, max_members: int | None = None,
                    gpu_fraction: float = 1.0) -> list[list[int]]:
    """Indices of `specs` that train together: members whose training sets differ in size cannot
    share batches, so specs are grouped by that size, then split into balanced chunks of at most
    `max_members` (default: about CPU_PARAMS_PER_CHUNK stacked parameters on a CPU; on a GPU as many
    as fit in GPU_MEMORY_SHARE of its free memory, by `_gpu_chunk`).
    The planner makes one job per chunk, so chunks also spread an ensemble over workers."""
    specs = list(specs)
    if not specs:
        return []
    labels = data.labels
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(specs):
        by_size[len(subset_indices(s.train_on, labels))].append(i)
    if max_members is None:
        on_cpu = data.x.device.type == "cpu"
        max_members = cpu_chunk(specs[0], data) if on_cpu else _gpu_chunk(specs[0], data, gpu_fraction)
    chunks = []
    for group in by_size.values():  # balanced: 64 members at most 47 a chunk go as 32 + 32
        n_chunks = -(-len(group) // max(1, max_members))
        size = -(-len(group) // n_chunks)
        chunks += [group[i : i + size] for i in range(0, len(group), size)]
    return chunks
