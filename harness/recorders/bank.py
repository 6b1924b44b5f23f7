"""A run's recorders as one bank: the one place per-sample signals are stored.

Every engine records through a bank: `harness.training.train_run` feeds it training batches and
epoch checkpoints, the batched ensemble (`harness.ensemble`) gives each member a bank and feeds it
that member's share of one batched eval pass, and `harness.tracker.SampleTracker` feeds it a user's
own loop. A bank builds its recorders from requests, calls them in request order, charges each its
own time and FLOPs (a `Meter` per recorder, when timed), and hands back their arrays, by recorder
key, for the store, a checkpoint or the proxies (`Records`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial

import numpy as np
import torch
from torch import nn

from harness.recorders.base import Recorder, RecorderRequest, RunContext, build_recorder
from harness.timing import Meter

#: Batch recorders are timed on every 16th batch: per-batch CUDA events would cost more than they do.
BATCH_SAMPLE_EVERY = 16


class Records:
    """Recorded arrays on the host, by recorder key; `arrays(key)` makes it a `RunArrays`, read by
    proxies like a stored run."""

    def __init__(self, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        self._arrays = arrays

    @property
    def recorders(self) -> set[str]:
        return set(self._arrays)

    def arrays(self, recorder_key: str) -> dict[str, np.ndarray]:
        return self._arrays[recorder_key]


class RecorderBank:
    """The recorders of one run, by key, in the order they were requested or added.

    `timed=False` calls them directly (a user's loop, an ensemble member whose pass is timed as a
    whole); otherwise each call goes through the recorder's `Meter`.
    """

    def __init__(self, ctx: RunContext, requests: Iterable[RecorderRequest] = (), *, timed: bool = True) -> None:
        self.ctx = ctx
        self.timed = timed
        self.recorders: dict[str, Recorder] = {}
        self.meters: dict[str, Meter] = {}
        for request in requests:
            self.add(request.key, build_recorder(request, ctx))

    def add(self, key: str, recorder: Recorder) -> Recorder:
        self.recorders[key] = recorder
        if self.timed:
            self.meters[key] = Meter(self.ctx.device, sample_every=BATCH_SAMPLE_EVERY if recorder.on_batches else 1)
        return recorder

    def __getitem__(self, key: str) -> Recorder:
        return self.recorders[key]

    def __contains__(self, key: object) -> bool:
        return key in self.recorders

    def __iter__(self) -> Iterator[str]:
        return iter(self.recorders)

    def _call(self, key: str, fn: Callable[[], None], units: float = 1.0) -> None:
        if self.timed:
            self.meters[key].run(fn, units=units)
        else:
            fn()

    # -- feeding -------------------------------------------------------------------------------
    def on_batch(self, epoch: int, idx: torch.Tensor, logits: torch.Tensor | None, loss: torch.Tensor,
                 labels: torch.Tensor | None) -> None:
        """A training batch, after the step (detached tensors) to every batch recorder."""
        for key, rec in self.recorders.items():
            if rec.on_batches:
                self._call(key, partial(rec.on_batch, epoch, idx, logits, loss, labels), units=len(idx))

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        """The checkpoint after `epoch` to every recorder active there."""
        for key, rec in self.recorders.items():
            if rec.active(epoch, phase):
                self._call(key, partial(rec.on_epoch_end, epoch, phase, model))

    def on_eval_start(self, epoch: int) -> None:
        for rec in self.recorders.values():
            if rec.takes_eval:
                rec.on_eval_start(epoch)

    def on_eval_batch(self, epoch: int, idx: torch.Tensor, signals: dict[str, torch.Tensor]) -> None:
        """One batch of an eval pass run elsewhere (`eval_signals` of samples `idx`); not timed here:
        the caller times its pass as a whole."""
        for rec in self.recorders.values():
            if rec.takes_eval:
                rec.on_eval_batch(epoch, idx, signals)

    # -- reading -------------------------------------------------------------------------------
    def arrays(self, rows: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Every recorder's arrays by key (open-ended buffers as their first `rows` rows)."""
        return {key: rec.arrays() if rows is None else rec.arrays(rows) for key, rec in self.recorders.items()}

    def load_arrays(self, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        for key, rec in self.recorders.items():
            rec.load_arrays(arrays[key])

    def state(self) -> dict[str, dict]:
        return {key: m.state() for key, m in self.meters.items()}

    def load_state(self, state: dict[str, dict]) -> None:
        for key, meter in self.meters.items():
            meter.load(state[key])

    def seconds(self) -> dict[str, float]:
        return {key: m.seconds() for key, m in self.meters.items()}

    def flops(self) -> dict[str, int]:
        return {key: m.flops() for key, m in self.meters.items()}

    def batch_clock_seconds(self) -> float:
        """Seconds the batch recorders spent inside the training loop's clock."""
        return sum(self.meters[k].clock_seconds() for k, r in self.recorders.items() if r.on_batches)
