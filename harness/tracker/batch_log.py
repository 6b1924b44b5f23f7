"""Training batches held in arrival order and recorded together (`SampleTracker.update`).

Recording one batch is a dozen small operations -- the one-presentation bookkeeping, the signals,
the label and non-finite checks -- and each costs about as much for 128 samples as for 65,536. On a
small model, where a step takes a few milliseconds, doing them per batch made the tracker cost a
tenth of the loop. `update()` therefore copies the batch into this log (two to four copies) and the
log is recorded as one batch when the epoch closes, when it fills, or when a batch of another kind
arrives. Recording batches in order as one batch gives the same values as recording them one by
one: every signal is per sample, and the first-presentation rule follows arrival order.

Values are copied, not referenced, so a loop that reuses or changes its tensors after `update()`
(a static output buffer of a CUDA graph, an in-place op) cannot change what is recorded.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

#: most samples held before they are recorded (1 MiB of indices and losses)
MAX_ROWS = 1 << 16
#: most logit values held (4 MiB in float32, 8 in float64): with many classes, fewer samples
MAX_LOGIT_VALUES = 1 << 20


class Batch(NamedTuple):
    """One `update()`'s checked inputs, or the log's held batches as one. Indices are either on
    the host (`host`, range-checked) or on the device (`idx`, int64, range not yet checked)."""

    host: np.ndarray | None
    idx: torch.Tensor | None
    losses: torch.Tensor | None
    logits: torch.Tensor | None
    labels: torch.Tensor | None
    flag_logits: bool  # count non-finite logits (logit signals are recorded from them)

    @property
    def size(self) -> int:
        if self.host is not None:
            return len(self.host)
        assert self.idx is not None  # the indices are on the host or on the device
        return int(self.idx.shape[0])

    def to(self, device: torch.device) -> Batch:
        """A copy on `device`, sharing no memory with this one (`SampleTracker.copy`)."""

        def moved(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, copy=True)

        return self._replace(host=None if self.host is None else self.host.copy(), idx=moved(self.idx),
                             losses=moved(self.losses), logits=moved(self.logits), labels=moved(self.labels))

    @property
    def kind(self) -> tuple[object, ...]:
        """What a log must hold alike: batches of one kind are recorded as one."""
        logits = None if self.logits is None else (self.logits.dtype, self.logits.shape[1])
        return self.host is not None, self.losses is not None, logits, self.labels is not None, self.flag_logits


class BatchLog:
    """The epoch's batches not yet recorded, in fixed buffers on the tracker's device (made for
    the first batch of a kind, kept while batches of that kind arrive)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rows = 0
        self._kind: tuple[object, ...] | None = None
        self._capacity = 0
        self._host: np.ndarray | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    def add(self, batch: Batch) -> bool:
        """Hold the batch; False when it cannot be held now (the log holds another kind or is full:
        record `held()` and `clear()` first; or the batch alone is larger than the log: record it as it is)."""
        kind, b = batch.kind, batch.size
        if kind != self._kind:
            if self.rows or b > self.capacity(batch):
                return False
            self._make(batch)
        if self.rows + b > self._capacity:
            return False
        start, stop = self.rows, self.rows + b
        if batch.host is not None:
            assert self._host is not None  # made for this kind, whose indices are on the host
            self._host[start:stop] = batch.host
        for name in self._buffers:
            self._buffers[name][start:stop].copy_(getattr(batch, name))
        self.rows = stop
        return True

    def held(self) -> Batch | None:
        """The held batches as one (views of the log's buffers: record them, then `clear()`), or
        None when nothing is held."""
        if not self.rows:
            return None
        rows = self.rows
        held = {name: buffer[:rows] for name, buffer in self._buffers.items()}
        host = None if self._host is None else self._host[:rows].copy()
        assert self._kind is not None  # set by _make for the held rows
        _, _, _, _, flag_logits = self._kind
        return Batch(host=host, idx=held.get("idx"), losses=held.get("losses"), logits=held.get("logits"),
                     labels=held.get("labels"), flag_logits=bool(flag_logits))

    def clear(self) -> None:
        """Forget the held batches (after they were recorded)."""
        self.rows = 0

    @staticmethod
    def capacity(batch: Batch) -> int:
        """How many samples of the batch's kind the log holds."""
        if batch.logits is None:
            return MAX_ROWS
        return max(1, min(MAX_ROWS, MAX_LOGIT_VALUES // max(1, int(batch.logits.shape[1]))))

    def _make(self, batch: Batch) -> None:
        capacity = self.capacity(batch)
        dev = self.device
        buffers: dict[str, torch.Tensor] = {}
        if batch.host is None:
            buffers["idx"] = torch.empty(capacity, dtype=torch.int64, device=dev)
        if batch.losses is not None:
            buffers["losses"] = torch.empty(capacity, dtype=torch.float32, device=dev)
        if batch.logits is not None:
            width = max(1, int(batch.logits.shape[1]))
            buffers["logits"] = torch.empty((capacity, width), dtype=batch.logits.dtype, device=dev)
        if batch.labels is not None:
            buffers["labels"] = torch.empty(capacity, dtype=torch.int64, device=dev)
        self._host = np.empty(capacity, dtype=np.int64) if batch.host is not None else None
        self._buffers, self._capacity, self._kind = buffers, capacity, batch.kind
