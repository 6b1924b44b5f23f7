"""The one training loop every run goes through.

A run trains `spec.model` with `spec.recipe` on `spec.train_on` (and, for two-phase runs such as
SSFT's, then on `spec.then_on` with a fresh optimizer), while recorders write per-sample signals
into device buffers. Inside an epoch nothing leaves the device: losses and accuracies are summed on
the device and read once per epoch, which is also when a non-finite loss is caught.

Randomness is derived from (seed, epoch), not carried in generator state, so a run resumed from a
checkpoint continues the exact batch order and augmentation it would have had.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from harness.errors import RunFailed
from harness.models import build_model
from harness.precision import autocast, channels_last, per_sample_loss
from harness.predictions import predicts_label
from harness.prepared import PreparedData
from harness.recipe import Recipe, make_optimizer, make_scheduler, random_crop_flip
from harness.recorders import RecorderBank, RecorderRequest, RunContext, eval_batches
from harness.recorders.base import eval_mode
from harness.runspec import RunSpec
from harness.subsets import subset_indices
from harness.timing import Stopwatch, count_flops, synchronize, warm_up_flop_counter

CheckpointFn = Callable[[dict], None]


@dataclass
class RunOutput:
    """What a finished run hands to the store."""

    arrays: dict[str, dict[str, np.ndarray]]  # recorder key -> named arrays
    train_seconds: float  # the training loop alone (recorders excluded)
    train_flops: int  # measured on one batch, scaled by samples processed
    recorder_seconds: dict[str, float]
    recorder_flops: dict[str, int]
    train_acc: float  # eval mode, on the samples and labels the (last phase of the) run trained on
    test_acc: float
    history: list[dict[str, float]] = field(default_factory=list)


def _seed_for(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1)


# The per-epoch schedule, shared by `train_run` and the batched ensemble (harness.ensemble) so the
# two engines cannot drift apart: batch order, augmentation decision and draws, the epoch's loss and
# accuracy read once, the non-finite check, and accuracy on held-out data.


def augmenting(recipe: Recipe, input_shape: tuple[int, ...], epoch: int) -> bool:
    """Crop and flip only images big enough for them (not 8x8 digits), and only in the first
    `recipe.augment_epochs` epochs of a phase when that is set."""
    in_time = recipe.augment_epochs is None or epoch < recipe.augment_epochs
    return recipe.augment and in_time and input_shape[-1] >= 16


def batch_order(seed: int, epoch: int, idx: torch.Tensor) -> torch.Tensor:
    """This epoch's order of the training indices `idx`: a function of (seed, epoch) only, so a
    resumed run and an ensemble member see exactly the batches the run would have seen."""
    gen = torch.Generator().manual_seed(_seed_for(seed, epoch, 0))
    return idx[torch.randperm(len(idx), generator=gen).to(idx.device)]


def augment_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_seed_for(seed, epoch, 1))


def batch_starts(m: int, batch_size: int) -> range:
    return range(0, m, batch_size)


def close_epoch(epoch: int, phase: int, loss_sum: torch.Tensor, correct_sum: torch.Tensor, m: int
                ) -> list[dict[str, float]]:
    """History rows (one per member; `loss_sum` is () or (K,)) from the epoch's device sums: the one
    host sync of the epoch."""
    losses = torch.atleast_1d(loss_sum / m).tolist()
    accs = torch.atleast_1d(correct_sum / m).tolist()
    return [{"epoch": epoch, "phase": phase, "loss": lo, "acc": a} for lo, a in zip(losses, accs)]


def non_finite(row: dict[str, float]) -> bool:
    return not np.isfinite(row["loss"])


def non_finite_message(runs: str) -> str:
    return (f"training loss became non-finite in {runs}; lower the learning rate (--lr) or check the data")


@contextmanager
def first_batch_flops(sink: list[int]) -> Iterator[None]:
    """`count_flops` around a run's first training step. The FLOP counter tracks modules with global
    forward hooks, and torch.compile warns, once per run, that such hooks fire once more for its
    compiled wrapper: that touches the counter's per-module breakdown, never the total a run keeps
    (the same FLOPs compiled and eager), so `--compile` runs do not print the warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `torch\.compile\(module\)` when there are global hooks")
        with count_flops(sink):
            yield


@torch.no_grad()
def count_correct(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  batch: int) -> torch.Tensor:
    """Correct predictions of `forward` (logits (..., b, C); leading dims are ensemble members)."""
    correct = None
    for s in range(0, len(y), batch):
        hits = predicts_label(forward(x[s : s + batch]), y[s : s + batch]).sum(-1)
        correct = hits if correct is None else correct + hits
    return correct if correct is not None else torch.zeros(())


def _accuracy(model: nn.Module, data: PreparedData, idx: torch.Tensor, batch: int) -> float:
    correct = torch.zeros((), device=data.x.device)
    for b, logits in eval_batches(model, data, idx, batch):
        correct += predicts_label(logits, data.y[b]).sum()
    return float(correct) / max(1, len(idx))


def _test_accuracy(model: nn.Module, data: PreparedData, batch: int) -> float:
    x, y = data.test_inputs()
    if len(y) == 0:
        return float("nan")
    with eval_mode(model):
        return float(count_correct(model, x, y, batch)) / len(y)


@dataclass
class _StepCounts:
    """What the loop counts besides the model, checkpointed with the run under these field names:
    FLOPs per training sample (measured on the first batch), samples processed, and the seconds and
    samples of each process's first steps, which are taken off the clock (`billed_seconds`)."""

    train_flops_per_sample: float = 0.0
    samples_seen: int = 0
    first_batch_seconds: float = 0.0
    first_batch_samples: int = 0

    @classmethod
    def restored(cls, state: dict) -> _StepCounts:
        return cls(state["train_flops_per_sample"], state["samples_seen"],
                   state.get("first_batch_seconds", 0.0),  # absent from older checkpoints
                   state.get("first_batch_samples", 0))

    def billed_seconds(self, loop_seconds: float) -> float:
        return billed_seconds(loop_seconds, self.first_batch_seconds, self.samples_seen, self.first_batch_samples)


def billed_seconds(seconds: float, warm_seconds: float, samples: int, warm_samples: int) -> float:
    """A training loop's `seconds` without its warm-up steps (`warm_seconds` over `warm_samples`: a cold
    device, a FLOP count, a compile), their samples billed at the mean rate of the other steps. Both
    engines charge by this one rule (`train_run`, the batched ensemble's `ChunkProgress`), so a run
    costs the same whichever trained it."""
    if samples > warm_samples:
        seconds = (seconds - warm_seconds) * (samples / (samples - warm_samples))
    return max(0.0, seconds)


def _batch_inputs(data: PreparedData, idx: torch.Tensor, recipe: Recipe, aug_gen: torch.Generator | None,
                  nhwc: bool) -> torch.Tensor:
    """The training batch `idx` as the model takes it: cropped and flipped raw images, then normalized
    (the padding is black), when the epoch augments; channels-last after that, as asked."""
    if aug_gen is not None:
        xb = data.normalize(random_crop_flip(data.x[idx], recipe.crop_padding, aug_gen))
    else:
        xb = data.inputs(idx)
    return channels_last(xb) if nhwc else xb  # after augmentation, whose crop hands back a row-major batch


def train_run(
    spec: RunSpec,
    data: PreparedData,
    requests: list[RecorderRequest],
    *,
    resume_state: dict | None = None,
    checkpoint: CheckpointFn | None = None,
    checkpoint_every_s: float = 120.0,
    progress: bool = True,
    compile: bool = False,
) -> RunOutput:
    """Train `spec`, recording `requests`. The recipe's precision (bf16 autocast of the training
    forward; losses and records stay float32) and memory format apply here; `compile` wraps the
    training step's model in torch.compile (same numbers up to kernel choice, so not in the spec)."""
    device = data.x.device
    recipe = spec.recipe
    labels = data.labels
    phase_idx = [torch.as_tensor(subset_indices(spec.train_on, labels), device=device)]
    if spec.then_on is not None:
        phase_idx.append(torch.as_tensor(subset_indices(spec.then_on, labels), device=device))
    total_epochs = recipe.epochs * len(phase_idx)

    torch.manual_seed(spec.seed)
    model = build_model(spec.model, tuple(data.x.shape[1:]), data.num_classes).to(device)
    precision = getattr(recipe, "precision", "fp32")
    nhwc = getattr(recipe, "channels_last", False)
    if nhwc:
        model = channels_last(model)
    # default mode: CUDA graphs (mode='reduce-overhead') would overwrite a step's logits at the next
    # replay, and the bank holds them until the epoch's end (harness/recorders/held.py)
    step_model = torch.compile(model) if compile else model
    ctx = RunContext(data, recipe.epochs, phase_idx[0], recipe.batch_size, device, seed=spec.seed)
    bank = RecorderBank(ctx, requests, hold_batches=True)
    train_watch = Stopwatch(device)
    warm_up_flop_counter()
    counts = _StepCounts()
    # each process's first steps are off the clock (`_StepCounts.billed_seconds`): the first step is
    # FLOP-counted (a fresh run) and meets a cold device; with --compile the second compiles too, as
    # torch.compile runs the step under the FLOP counter eagerly
    off_clock_steps = 1 + int(compile)
    history: list[dict[str, float]] = []

    def new_optimizer():
        opt = make_optimizer(recipe, model.parameters())
        return opt, make_scheduler(recipe, opt)

    optimizer, scheduler = new_optimizer()
    start_epoch = 0
    if resume_state is not None:
        start_epoch = resume_state["epoch"]
        if start_epoch >= recipe.epochs and len(phase_idx) > 1:
            optimizer, scheduler = new_optimizer()
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        bank.load_arrays(resume_state["recorders"])
        train_watch.add(resume_state["train_seconds"])
        bank.load_state(resume_state["meters"])
        counts = _StepCounts.restored(resume_state)
        history = list(resume_state["history"])
    last_checkpoint = time.monotonic()
    steps_here = 0

    bar = tqdm(range(start_epoch, total_epochs), desc=spec.label(), leave=False, disable=not progress)
    for g in bar:
        phase = 1 if g < recipe.epochs else 2
        epoch = g if phase == 1 else g - recipe.epochs
        if phase == 2 and epoch == 0:
            optimizer, scheduler = new_optimizer()
        perm = batch_order(spec.seed, g, phase_idx[phase - 1])
        augment = augmenting(recipe, tuple(data.x.shape[1:]), epoch)
        aug_gen = augment_generator(spec.seed, g, device) if augment else None
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), device=device)
        model.train()
        synchronize(device)  # the last epoch's recorder passes are theirs, not this epoch's training
        t0 = time.perf_counter()
        for start in batch_starts(len(perm), recipe.batch_size):
            idx = perm[start : start + recipe.batch_size]
            yb = data.y[idx]
            xb = _batch_inputs(data, idx, recipe, aug_gen, nhwc)
            measuring = counts.samples_seen == 0  # count FLOPs on the run's first batch
            flops: list[int] = []
            off_clock = steps_here < off_clock_steps
            if off_clock:
                synchronize(device)
                if compile:  # one graph for every batch size, compiled here off the clock: otherwise the
                    torch._dynamo.maybe_mark_dynamic(xb, 0)  # partial last batch recompiles on it
            t_first = time.perf_counter()
            with first_batch_flops(flops) if measuring else nullcontext():
                with autocast(device, precision):
                    logits = step_model(xb)
                loss = per_sample_loss(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.mean().backward()
                optimizer.step()
            if off_clock:
                synchronize(device)  # the step's kernels are its own
                counts.first_batch_seconds += time.perf_counter() - t_first
                counts.first_batch_samples += len(idx)
            steps_here += 1
            if measuring:
                counts.train_flops_per_sample = flops[0] / len(idx)
            counts.samples_seen += len(idx)
            loss_d, logits_d = loss.detach(), logits.detach()
            loss_sum += loss_d.sum()
            correct_sum += predicts_label(logits_d, yb).sum()
            if phase == 1:
                bank.on_batch(epoch, idx, logits_d, loss_d, yb)
        scheduler.step()
        (row,) = close_epoch(g + 1, phase, loss_sum, correct_sum, len(perm))
        train_watch.add(time.perf_counter() - t0)
        if non_finite(row):
            raise RunFailed(f"run {spec.label()} [{spec.digest()}]: "
                            + non_finite_message(f"epoch {g + 1}"))
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}")
        bank.on_epoch_end(epoch, phase, model)
        if checkpoint is not None and g + 1 < total_epochs and (
            time.monotonic() - last_checkpoint >= checkpoint_every_s
        ):
            checkpoint(
                {
                    "epoch": g + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "recorders": bank.arrays(),
                    "train_seconds": train_watch.seconds(),
                    "meters": bank.state(),
                    **asdict(counts),
                    "history": history,
                }
            )
            last_checkpoint = time.monotonic()
    bar.close()

    return RunOutput(
        arrays=bank.arrays(),
        # the loop's clock ran through batch recorders and the first steps: both are taken out
        train_seconds=counts.billed_seconds(train_watch.seconds() - bank.batch_clock_seconds()),
        train_flops=int(round(counts.train_flops_per_sample * counts.samples_seen)),
        recorder_seconds=bank.seconds(),
        recorder_flops=bank.flops(),
        train_acc=_accuracy(model, data, phase_idx[-1], 4 * recipe.batch_size),
        test_acc=_test_accuracy(model, data, 4 * recipe.batch_size),
        history=history,
    )

