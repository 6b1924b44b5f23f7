"""Batched ensembles: K runs that differ only in training subset and seed, trained as one.

The stability reference needs K models (64 by default on digits, thousands at CIFAR scale) that
share model, recipe and data. Trained one at a time, small models spend most of their time in
per-step Python and kernel-launch overhead; stacked with ``torch.func`` (one ``vmap`` over the
members' parameters) a step is a few large batched matmuls instead of K small ones.

Each member reproduces what ``harness.training.train_run`` would do for its spec:
- initialisation: ``torch.manual_seed(spec.seed)`` then ``build_model``;
- batch order: its own permutation of its own training indices from the same (seed, epoch)
  generator, and the same per-batch augmentation generator;
- optimizer and schedule: ``make_optimizer`` / ``make_scheduler`` applied to the stacked tensors.
  SGD (momentum, weight decay) and Adam are element-wise and their step count and learning rate
  are shared, so one optimizer over the stacked tensors is the same update per member;
- loss: each member's batch-mean cross entropy; the summed objective gives each member exactly
  the gradient of its own loss.
Results agree with ``train_run`` up to float rounding (batched matmuls reduce in another order),
and a member's numbers do not depend on its chunk (company, place, size; ``ROW_ALIGN``,
``each_member``), so which other runs were pending never changes a stored run.

Both engines share one per-epoch schedule (``harness.training``: batch order, augmentation,
epoch loss and accuracy, non-finite check, held-out accuracy) and one storage: each member has a
``RecorderBank`` whose ``eval_pass`` recorder takes that member's share of one batched eval pass
(``eval_signals`` on the stacked logits, fed through ``on_eval_batch``), so the arrays are the
recorder's and new signals reach both engines at once.

Batch norm is supported: each member's running statistics are rows of the stacked buffers, which
``functional_call`` under ``vmap`` updates in place per member, so a member normalises with its own
batch's statistics in training and its own running statistics in eval, exactly as alone.
bf16 autocast covers the training forward as in ``train_run`` (the loss is taken in float32); on
CUDA, batch norm under vmap gets a float32 input (``float32_batch_norm``).
Channels-last is a layout request the batched engine does not apply: under ``vmap`` a stacked
convolution is one grouped convolution whose layout torch picks; the computation is the same.

Only single-phase runs and the final eval pass are supported, never a model that draws random
numbers in training (dropout), and on a CPU only models without convolutions (there batching them
is slower); ``can_ensemble`` says so (``harness.ensemble_plan``, which also sizes the chunks), and
everything else trains one run at a time, as does every run on all the data
(``harness.planner.trains_batched``). A spec on part of the data that can be a member
always trains here, even alone (an ensemble of one), so the engine that produced a stored run
depends only on the spec and the device type, never on what else happened to be pending.
Members are independent (the summed loss gives each only its own gradient), so a member whose loss
became non-finite fails alone.

A chunk given `ChunkCheckpoints` (a job whose worker reaches the run store) checkpoints its members at
epoch ends, every `--checkpoint-every` seconds, and resumes from them bit for bit (`harness.ensemble_checkpoint`).
Training seconds leave out each process's first step, the one-time warm-up, and bill its samples at
the mean rate of the others, as `train_run` does (`ChunkProgress.charged_seconds`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from harness.ensemble_checkpoint import ChunkCheckpoints, ChunkProgress, Stacked

# `name as name`: moved to ensemble_plan or ensemble_stack, still imported from here by tests
from harness.ensemble_plan import MAX_STACKED_ELEMENTS as MAX_STACKED_ELEMENTS
from harness.ensemble_plan import can_ensemble, ensemble_chunks, stacked_batch
from harness.ensemble_plan import members_per_step as members_per_step
from harness.ensemble_stack import GPU_MEMORY_SHARE as GPU_MEMORY_SHARE
from harness.ensemble_stack import (
    ROW_ALIGN,
    aligned_count,
    aligned_rows,
    each_member,
    float32_batch_norm,
    has_batch_norm,
    largest_activation,
    members_test_accuracy,
    normalized_inputs,
    plain_flops,
    stack_members,
)
from harness.ensemble_stack import members_that_fit as members_that_fit
from harness.errors import HarnessError, RunFailed
from harness.models import build_model
from harness.precision import autocast
from harness.predictions import predicts_label
from harness.prepared import PreparedData
from harness.recipe import make_optimizer, make_scheduler, random_crop_flip
from harness.recorders import EVAL_LAST, RecorderBank, RecorderRequest, RunContext
from harness.recorders.eval_pass import eval_signals
from harness.runspec import RunSpec
from harness.subsets import subset_indices
from harness.timing import count_then_time, synchronize
from harness.training import (
    RunOutput,
    augment_generator,
    augmenting,
    batch_order,
    batch_starts,
    close_epoch,
    non_finite,
    non_finite_message,
)


def train_members(
    specs: Sequence[RunSpec],
    data: PreparedData,
    requests: Sequence[RecorderRequest],
    progress: bool = True,
    max_members: int | None = None,
    checkpoints: ChunkCheckpoints | None = None,
) -> list[RunOutput | RunFailed]:
    """One RunOutput per spec, in order, or a RunFailed for a member whose loss became non-finite
    (the other members are unaffected). Trains `ensemble_chunks(specs, data, max_members)`, each
    chunk checkpointed to and resumed from `checkpoints` when given."""
    specs = list(specs)
    if not specs:
        return []
    first = specs[0]
    for s in specs:
        if (s.data, s.model, s.recipe) != (first.data, first.model, first.recipe) or not can_ensemble(
                s, requests, inputs=data.x):
            raise HarnessError(f"run {s.label()} cannot join this ensemble (different model/recipe/data, "
                               "a second phase, an unsupported recorder or dropout in the model)")
    labels = data.labels
    outputs: list[RunOutput | RunFailed | None] = [None] * len(specs)
    normalized = normalized_inputs(data)
    for members in ensemble_chunks(specs, data, max_members):
        outs = _train_group([specs[i] for i in members], [subset_indices(specs[i].train_on, labels) for i in members],
                            data, requests, progress, normalized, checkpoints)
        for i, out in zip(members, outs, strict=True):
            outputs[i] = out
    return [o for o in outputs if o is not None]


def train_ensemble(
    specs: Sequence[RunSpec],
    data: PreparedData,
    requests: Sequence[RecorderRequest],
    progress: bool = True,
    max_members: int | None = None,
) -> list[RunOutput]:
    """One RunOutput per spec, in order; raises RunFailed naming every member whose loss became
    non-finite (`train_members` returns the others instead)."""
    outs = train_members(specs, data, requests, progress, max_members)
    failed = [o for o in outs if isinstance(o, RunFailed)]
    if failed:
        raise RunFailed("; ".join(str(f) for f in failed))
    return [o for o in outs if isinstance(o, RunOutput)]


def _init_models(specs: Sequence[RunSpec], data: PreparedData) -> list[nn.Module]:
    models = []
    for s in specs:
        torch.manual_seed(s.seed)  # exactly as train_run
        models.append(build_model(s.model, tuple(data.x.shape[1:]), data.num_classes).to(data.x.device))
    return models


def _train_group(
    specs: list[RunSpec],
    indices: list[np.ndarray],
    data: PreparedData,
    requests: Sequence[RecorderRequest],
    progress: bool,
    normalized: torch.Tensor | None,
    checkpoints: ChunkCheckpoints | None = None,
) -> list[RunOutput | RunFailed]:
    """One chunk (`ensemble_chunks`) trained as one stacked model, so K small runs cost a few large
    batched steps instead of K small ones: each member's RunOutput, or its RunFailed when its loss
    became non-finite; resumed from and checkpointed to `checkpoints` when given."""
    device = data.x.device
    recipe = specs[0].recipe
    k, m = len(specs), len(indices[0])
    shape = tuple(data.x.shape[1:])
    train_idx = torch.as_tensor(np.stack(indices), device=device)  # (K, M)
    params, buffers, skeleton, flops_per_sample, eval_batch = _stack_chunk(specs, data, train_idx)

    def one(p, b, x):
        return functional_call(skeleton, (p, b), (x,))

    forward = vmap(one)  # (K, b, ...) inputs, one batch per member
    pad = not has_batch_norm(skeleton)

    optimizer = make_optimizer(recipe, list(params.values()))
    stacked = Stacked(params, buffers, optimizer, make_scheduler(recipe, optimizer))
    run = (checkpoints.resume(specs, stacked, recipe.epochs) if checkpoints is not None else None) or ChunkProgress(
        epoch=0, history=[[] for _ in specs])
    skeleton.train()
    steps_here = 0  # this process's: its first step is the warm-up (`ChunkProgress.charged_seconds`)
    bar = tqdm(range(run.epoch, recipe.epochs), desc=f"ensemble of {k} ({specs[0].model})", leave=False,
               disable=not progress)
    for epoch in bar:
        perm = torch.stack([batch_order(s.seed, epoch, train_idx[j]) for j, s in enumerate(specs)])  # (K, M)
        augment = augmenting(recipe, shape, epoch)
        aug_gens = [augment_generator(s.seed, epoch, device) for s in specs] if augment else []
        loss_sum = torch.zeros(k, device=device)
        correct_sum = torch.zeros(k, device=device)
        synchronize(device)  # the FLOP count and stacking queued before the first epoch are not training
        t0 = time.perf_counter()
        for start in batch_starts(m, recipe.batch_size):
            idx = perm[:, start : start + recipe.batch_size]  # (K, b)
            b = idx.shape[1]
            yb = data.y[idx]
            if augment:  # crop the raw images, then normalize: the padding is black, as in train_run
                raw = data.x[idx.reshape(-1)].reshape(k, b, *shape)
                xb = data.normalize(torch.stack([random_crop_flip(raw[j], recipe.crop_padding, aug_gens[j])
                                                 for j in range(k)]))
            else:
                xb = normalized[idx] if normalized is not None else data.inputs(idx.reshape(-1)).reshape(k, b, *shape)
            if steps_here == 0:
                synchronize(device)
            t_step = time.perf_counter()
            loss, logits = _train_step(forward, stacked, xb, yb, recipe.precision, pad)
            if steps_here == 0:  # the warm-up: timed to the end of its kernels, billed at the others' rate
                synchronize(device)
                run.warm_seconds += time.perf_counter() - t_step
                run.warm_samples += b
            steps_here += 1
            run.samples_seen += b
            loss_sum += loss.detach().sum(1)
            correct_sum += predicts_label(logits.detach(), yb).sum(1)
        stacked.scheduler.step()
        rows = close_epoch(epoch + 1, 1, loss_sum, correct_sum, m)
        run.seconds += time.perf_counter() - t0
        for j, row in enumerate(rows):
            if non_finite(row) and j not in run.failed:
                run.failed[j] = epoch + 1
            run.history[j].append(row)
        run.epoch = epoch + 1
        bar.set_postfix(loss=f"{np.mean([r['loss'] for r in rows]):.3f}")
        if checkpoints is not None and run.epoch < recipe.epochs and checkpoints.due():
            checkpoints.save(specs, stacked, run)
    bar.close()
    skeleton.eval()
    return _member_outputs(specs, train_idx, data, requests, forward, stacked, run, flops_per_sample, eval_batch,
                           checkpoints)


def _stack_chunk(specs: list[RunSpec], data: PreparedData, train_idx: torch.Tensor
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], nn.Module, float, int]:
    """The chunk's members initialised as `train_run` would and stacked for `torch.func`: parameters,
    buffers, the meta-device skeleton they run in, and what one plain member measures before it is
    stacked away: FLOPs per training sample and the eval batch whose stacked activations fit."""
    recipe = specs[0].recipe
    models = _init_models(specs, data)
    params, buffers = stack_members(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    if data.x.device.type == "cuda" and recipe.precision != "fp32":
        float32_batch_norm(skeleton)
    first = train_idx[0, : recipe.batch_size]  # FLOPs as train_run counts them: one plain member's batch
    flops_per_sample = plain_flops(models[0], data.inputs(first), data.y[first]) / len(first)
    # the eval passes give every member its own copy of the same images: a batch whose stacked activations fit
    eval_batch = stacked_batch(len(specs), 4 * recipe.batch_size,
                               largest_activation(models[0].eval(), data.inputs(first[:1])), align=ROW_ALIGN)
    return params, buffers, skeleton, flops_per_sample, eval_batch


def _member_outputs(
    specs: list[RunSpec],
    train_idx: torch.Tensor,
    data: PreparedData,
    requests: Sequence[RecorderRequest],
    forward,
    stacked: Stacked,
    run: ChunkProgress,
    flops_per_sample: float,
    eval_batch: int,
    checkpoints: ChunkCheckpoints | None,
) -> list[RunOutput | RunFailed]:
    """After the last epoch (the skeleton in eval mode): the final eval pass of every member, whose
    correctness gives train accuracy, and each member's RunOutput, or its RunFailed when its loss
    became non-finite; a failed member's checkpoint files are removed here (storing removes the others')."""
    device, recipe, k = data.x.device, specs[0].recipe, len(specs)
    params, buffers = stacked.params, stacked.buffers
    # the final eval pass always runs (train accuracy reads its correctness); it is stored when requested
    banks = [RecorderBank(RunContext(data, recipe.epochs, train_idx[j], recipe.batch_size, device, seed=s.seed),
                          [EVAL_LAST], timed=False) for j, s in enumerate(specs)]
    want_eval = EVAL_LAST in set(requests)
    eval_flops, eval_seconds = count_then_time(  # the pass rewrites its rows: a second execution is the first's
        lambda: _eval_pass(banks, recipe.epochs - 1, forward, params, buffers, data, eval_batch), device,
        count=want_eval)
    test_acc = members_test_accuracy(forward, params, buffers, data, eval_batch)
    train_acc = [float(torch.gather(bank[EVAL_LAST.key].buffers["correct"][0], 0, train_idx[j]).double().mean())
                 for j, bank in enumerate(banks)]
    if checkpoints is not None:  # failed members are never stored
        checkpoints.clear([specs[j] for j in run.failed])

    outputs: list[RunOutput | RunFailed] = []
    for j in range(k):
        if j in run.failed:
            outputs.append(RunFailed(f"run {specs[j].label()} [{specs[j].digest()}] (ensemble member): "
                                     + non_finite_message(f"epoch {run.failed[j]}")))
            continue
        outputs.append(
            RunOutput(
                arrays=banks[j].arrays() if want_eval else {},
                train_seconds=run.charged_seconds() / k,
                train_flops=int(round(flops_per_sample * run.samples_seen)),
                recorder_seconds={EVAL_LAST.key: eval_seconds / k} if want_eval else {},
                recorder_flops={EVAL_LAST.key: eval_flops * data.n // (k * aligned_count(data.n, eval_batch))}
                if want_eval else {},  # the FLOPs of the real rows (train_run's), not of the padding
                train_acc=float(train_acc[j]),
                test_acc=test_acc[j],
                history=run.history[j],
            )
        )
    return outputs


def _train_step(forward, stacked: Stacked, xb: torch.Tensor, yb: torch.Tensor, precision: str, pad: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of every member: per-sample losses (K, b) and logits (K, b, C); `pad`
    aligns the rows (ROW_ALIGN), which batch norm cannot take (zero rows would enter its statistics)."""
    b = xb.shape[1]
    xb = aligned_rows(xb) if pad else xb
    with autocast(xb.device, precision):
        logits = forward(stacked.params, stacked.buffers, xb)[:, :b]  # (K, b, C)
    # float32 as train_run's per_sample_loss; classes on dim 1: (K, C, b) runs the CPU kernel
    # ~5x faster than (K * b, C)
    loss = nn.functional.cross_entropy(logits.float().transpose(1, 2), yb, reduction="none")  # (K, b)
    stacked.optimizer.zero_grad(set_to_none=True)
    loss.mean(1).sum().backward()
    stacked.optimizer.step()
    return loss, logits


@torch.no_grad()
def _eval_pass(banks: Sequence[RecorderBank], epoch: int, forward, params, buffers, data: PreparedData,
               batch: int) -> None:
    """The eval pass after `epoch` for every member at once (`each_member`): `eval_signals` of the
    stacked logits (K, b, ...), each member's share fed to its bank."""
    n, y = data.n, data.y
    k = len(banks)
    for bank in banks:
        bank.on_eval_start(epoch)
    for start in range(0, n, batch):
        idx = torch.arange(start, min(n, start + batch), device=data.x.device)
        signals = eval_signals(each_member(forward, params, buffers, data.inputs(idx)), y[idx].expand(k, -1))
        for j, bank in enumerate(banks):
            bank.on_eval_batch(epoch, idx, {name: values[j] for name, values in signals.items()})


