"""Training batches held by the harness's own loop and handed to recorders as one, once an epoch.

A per-sample recorder does a handful of small operations per batch (an argmax, a softmax, a
gather, a scatter), and each costs about as much for 128 samples as for 50,000: next to the digits
MLP's ~2 ms step, recording the four training-pass recorders batch by batch cost 10-16 % of the
loop on a CPU and 28 % on an H200 (launch bound). Held and joined, they run once an epoch.

The harness's loop makes fresh logits, losses and labels for every batch and never changes them
after the step, so the batches are held by reference, not copied (a user's loop may reuse its
tensors: `harness.tracker.batch_log` copies them). Holding keeps them alive until they are
recorded, so the log is bounded: past `MAX_ROWS` samples or `MAX_LOGIT_VALUES` logits (64 MiB in
float32) it is recorded mid-epoch. Recording joined batches gives the values batch-by-batch
recording gives: every signal is per sample and a sample is presented once an epoch.
"""

from __future__ import annotations

import torch

#: most samples held before they are recorded
MAX_ROWS = 1 << 20
#: most logit values held before they are recorded (64 MiB in float32)
MAX_LOGIT_VALUES = 1 << 24


class HeldBatches:
    """One epoch's training batches not yet recorded, in arrival order."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.rows = 0
        self._logit_values = 0
        self._batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []

    def add(self, epoch: int, idx: torch.Tensor, logits: torch.Tensor | None, loss: torch.Tensor,
            labels: torch.Tensor | None) -> None:
        if self._batches and epoch != self.epoch:
            raise ValueError(f"held batches of epoch {self.epoch} must be recorded before epoch {epoch}'s")
        self.epoch = epoch
        self._batches.append((idx, loss, logits, labels))
        self.rows += int(idx.shape[0])
        self._logit_values += 0 if logits is None else logits.numel()

    @property
    def full(self) -> bool:
        return self.rows >= MAX_ROWS or self._logit_values >= MAX_LOGIT_VALUES

    def joined_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices and losses of every held batch, each as one tensor."""
        return (torch.cat([b[0] for b in self._batches]), torch.cat([b[1] for b in self._batches]))

    def joined_logits(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits and labels of every held batch, each as one tensor (None where a batch had none)."""
        logits = [b[2] for b in self._batches]
        labels = [b[3] for b in self._batches]
        return (None if any(t is None for t in logits) else torch.cat(logits),  # type: ignore[arg-type]
                None if any(t is None for t in labels) else torch.cat(labels))  # type: ignore[arg-type]

    def clear(self) -> None:
        self.epoch, self.rows, self._logit_values = None, 0, 0
        self._batches.clear()
