"""A run's recorders as one bank: the one place per-sample signals are stored.

Every engine records through a bank: `harness.training.train_run` feeds it training batches and
epoch checkpoints, the batched ensemble (`harness.ensemble`) gives each member a bank and feeds it
that member's share of one batched eval pass, and `harness.tracker.SampleTracker` feeds it a user's
own loop. A bank builds its recorders from requests, calls them in request order, charges each its
own time and FLOPs (a `Meter` per recorder, when timed), and hands back their arrays, by recorder
key, for the store, a checkpoint or the proxies (`Records`). The harness's own loop asks it to hold
training batches (`hold_batches`): recorders that declare `joins_batches` then get an epoch's batches as one
(`harness.recorders.held`), each billed the joining of the tensors it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.recorders.base import CODE_MARK, Recorder, RecorderRequest, RunContext, build_recorder
from harness.recorders.held import HeldBatches
from harness.timing import Meter, Stopwatch

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
    whole); otherwise each call goes through the recorder's `Meter`. `hold_batches=True` (a loop
    that never changes a batch's tensors after `on_batch`) holds training batches for the
    recorders that join them until the epoch's checkpoint, `flush()` or a full log.
    """

    def __init__(self, ctx: RunContext, requests: Iterable[RecorderRequest] = (), *, timed: bool = True,
                 hold_batches: bool = False) -> None:
        self.ctx = ctx
        self.timed = timed
        self.held = HeldBatches() if hold_batches else None
        self.recorders: dict[str, Recorder] = {}
        self.meters: dict[str, Meter] = {}
        self._in_loop = Stopwatch(ctx.device)  # flushes made inside the training loop's clock
        for request in requests:
            self.add(request.key, build_recorder(request, ctx))

    def add(self, key: str, recorder: Recorder) -> Recorder:
        self.recorders[key] = recorder
        if self.timed:
            per_batch = recorder.on_batches and not self._joins(recorder)
            self.meters[key] = Meter(self.ctx.device, sample_every=BATCH_SAMPLE_EVERY if per_batch else 1)
        return recorder

    def _joins(self, rec: Recorder) -> bool:
        """Whether `rec` gets held batches joined, rather than each batch as it comes."""
        return self.held is not None and rec.on_batches and rec.joins_batches

    def __getitem__(self, key: str) -> Recorder:
        return self.recorders[key]

    def __contains__(self, key: object) -> bool:
        return key in self.recorders

    def __iter__(self) -> Iterator[str]:
        return iter(self.recorders)

    def _call(self, key: str, fn: Callable[[], None], units: float = 1.0) -> None:
        try:
            if self.timed:
                self.meters[key].run(fn, units=units, repeatable=self.recorders[key].repeatable)
            else:
                fn()
        except Exception as e:  # re-raised as it is: `from None` erased the recorder's own `raise ... from` cause
            name_recorder(e, key, getattr(fn, "func", fn))
            raise

    # -- feeding -------------------------------------------------------------------------------
    def on_batch(self, epoch: int, idx: torch.Tensor, logits: torch.Tensor | None, loss: torch.Tensor,
                 labels: torch.Tensor | None) -> None:
        """A training batch, after the step (detached tensors) to every batch recorder, or held for
        those that join batches."""
        joining = False
        for key, rec in self.recorders.items():
            if self._joins(rec):
                joining = True
            elif rec.on_batches:
                self._call(key, partial(rec.on_batch, epoch, idx, logits, loss, labels), units=len(idx))
        if joining:
            assert self.held is not None
            if self.held.rows and self.held.epoch != epoch:
                self._flush_in_loop()
            self.held.add(epoch, idx, logits, loss, labels)
            if self.held.full:
                self._flush_in_loop()

    def _flush_in_loop(self) -> None:
        with self._in_loop.measure():
            self.flush()

    def flush(self) -> None:
        """Record the held batches as one: each joining recorder is billed the joins it reads."""
        held = self.held
        if held is None or not held.rows:
            return
        readers = [(key, rec) for key, rec in self.recorders.items() if self._joins(rec)]
        watches = {"samples": Stopwatch(self.ctx.device), "logits": Stopwatch(self.ctx.device)}
        with watches["samples"].measure():
            idx, loss = held.joined_samples()
        logits = labels = None
        if any(getattr(rec, "needs_logits", True) for _, rec in readers):
            with watches["logits"].measure():
                logits, labels = held.joined_logits()
        assert held.epoch is not None
        epoch = held.epoch
        held.clear()
        for key, rec in readers:
            if self.timed:
                self.meters[key].charge(watches["samples"])
                if getattr(rec, "needs_logits", True):
                    self.meters[key].charge(watches["logits"])
            self._call(key, partial(rec.on_batch, epoch, idx, logits, loss, labels), units=len(idx))

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        """The checkpoint after `epoch` (held batches recorded first) to every recorder active there."""
        self.flush()
        for key, rec in self.recorders.items():
            if rec.active(epoch, phase):
                self._call(key, partial(rec.on_epoch_end, epoch, phase, model))

    def on_eval_start(self, epoch: int) -> None:
        for key, rec in self.recorders.items():
            if rec.takes_eval:
                _named_call(key, rec.on_eval_start, epoch)

    def on_eval_batch(self, epoch: int, idx: torch.Tensor, signals: dict[str, torch.Tensor]) -> None:
        """One batch of an eval pass run elsewhere (`eval_signals` of samples `idx`); not timed here:
        the caller times its pass as a whole."""
        for key, rec in self.recorders.items():
            if rec.takes_eval:
                _named_call(key, rec.on_eval_batch, epoch, idx, signals)

    # -- reading -------------------------------------------------------------------------------
    def arrays(self, rows: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Every recorder's arrays by key (open-ended buffers as their first `rows` rows)."""
        self.flush()
        return {key: rec.arrays() if rows is None else rec.arrays(rows) for key, rec in self.recorders.items()}

    def load_arrays(self, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        for key, rec in self.recorders.items():
            rec.load_arrays(arrays[key])

    def state(self) -> dict[str, dict]:
        self.flush()
        return {key: m.state() for key, m in self.meters.items()}

    def load_state(self, state: dict[str, dict]) -> None:
        for key, meter in self.meters.items():
            meter.load(state[key])

    def seconds(self) -> dict[str, float]:
        self.flush()
        return {key: m.seconds() for key, m in self.meters.items()}

    def flops(self) -> dict[str, int]:
        self.flush()
        return {key: m.flops() for key, m in self.meters.items()}

    def batch_clock_seconds(self) -> float:
        """Seconds the batch recorders spent inside the training loop's clock: the calls of those
        fed batch by batch, and held batches recorded before the epoch's end."""
        per_batch = (k for k, r in self.recorders.items() if r.on_batches and not self._joins(r))
        return sum(self.meters[k].clock_seconds() for k in per_batch) + self._in_loop.seconds()


#: the note `name_recorder` adds, to be read back where a job's failure is said (`harness.runner.failure_line`)
RECORDER_NOTE = "raised in recorder "


def _named_call(key: str, method: Callable[..., None], *args: Any) -> None:
    try:
        method(*args)
    except Exception as e:
        name_recorder(e, key, method)
        raise


def name_recorder(error: Exception, key: str, method: object) -> Exception:
    """`error` with a note naming the recorder and method that raised it. A plugin recorder's bug failed
    its run as `job digits noise=0.1 mlp seed0: boom`, naming neither; its type is kept (an out-of-memory
    error stays one) and its message too, which other code reads."""
    notes = list(getattr(error, "__notes__", None) or [])
    if not any(isinstance(n, str) and n.startswith(RECORDER_NOTE) for n in notes):
        hook = getattr(method, "__name__", "a hook")
        note = f"{RECORDER_NOTE}{key.split(CODE_MARK)[0]} ({hook})"  # the way out is the runner's to say
        try:  # `add_note` (Python 3.11) appends to `__notes__`, which a traceback shows; 3.10 keeps it unshown
            error.__notes__ = [*notes, note]  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
    return error
