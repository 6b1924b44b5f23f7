"""A tracker's labels on the device (`TrackedSignals`): the given label of each sample, from the constructor
or from update(), and the count of presentations whose label differed from it.

Its own module because one label per sample is a check of its own: the proxies sum each sample's losses
against one label, so a sample that got two (a target transform, indices that do not match the labels)
would mix both; the end of the epoch turns a count here into `conflict_error`. The tests hold classes to
150 lines, and `TrackedSignals` records everything else."""

from __future__ import annotations

import numpy as np
import torch

from harness.errors import HarnessError


class GivenLabels:
    """`given`: (n + 1,) the label of each sample (-1: none yet; the last is the scratch column of
    repeated presentations); `conflicts`: (n,) per sample, the presentations whose update() label
    differed from the constructor's or, without those, from the label an earlier update() gave it.
    `keep`: the labels come from update() (no constructor labels). Both tensors change in place only."""

    def __init__(self, n: int, device: torch.device, fixed_labels: np.ndarray | None) -> None:
        given = np.full(n + 1, -1, dtype=np.int64)
        if fixed_labels is not None:
            given[:n] = fixed_labels
        self.given = torch.as_tensor(given).to(device)
        self.keep = fixed_labels is None  # labels come from update()
        self.conflicts = torch.zeros(n, dtype=torch.int32, device=device)
        #: `given` as of the last end_epoch() (update() labels only): what `forget` goes back to
        self.closed = self.given.clone() if self.keep else None

    def record(self, idx: torch.Tensor, slot: torch.Tensor, labels: torch.Tensor) -> None:
        """A batch's labels: kept at their slots (`Presentations.slots`) when they come from update(), and
        the presentations that differ counted, without a host sync."""
        before = self.given[idx]
        differ = before != labels
        if self.keep:  # -1: no label yet; a repeat within the batch, against its first presentation's
            differ &= before >= 0
            # a label once given stays: a conflicting one is counted (end_epoch raises), not kept, so that the
            # epoch discarded after the error leaves the labels its closed epochs were recorded against
            self.given.index_copy_(0, slot, torch.where(before >= 0, before, labels))
            after = self.given[idx]
            differ |= (after >= 0) & (after != labels)
        self.conflicts.index_add_(0, idx, differ.to(torch.int32))

    def close(self) -> None:
        """The epoch closed (without conflicts: `end_epoch` raised before): its labels are the record's."""
        if self.closed is not None:
            self.closed.copy_(self.given)

    def forget(self) -> None:
        """Drop what the open epoch told (`SampleTracker.discard_epoch`): its conflicts and, from update(),
        the labels it gave first -- to samples no closed epoch presented, or presented with losses= alone --
        so the rerun may give other labels than the discarded attempt did."""
        if self.closed is not None:
            self.given.copy_(self.closed)
        self.conflicts.zero_()

    def restore_closed(self, saved: torch.Tensor | None, presented: torch.Tensor) -> None:
        """`closed` from a state (`harness.tracker.state`); a state saved before it was kept: the labels of
        the samples a closed epoch presented (`presented`: (n,) closed epochs per sample), its old rule."""
        if self.closed is None:
            return
        if saved is None:
            self.closed.copy_(self.given)
            self.closed[: len(presented)].masked_fill_(presented == 0, -1)
        else:
            self.closed.copy_(saved)

    def conflict_error(self, count: int, epoch_number: int) -> HarnessError:
        """The error of an epoch whose `count` samples got another label than before (`epoch_checks`)."""
        first = torch.nonzero(self.conflicts).flatten()[:10].tolist()
        if self.keep:
            return HarnessError(
                f"update() got labels for {count} sample(s) in epoch {epoch_number} other than an earlier update() "
                f"gave them (first: {first}); every proxy would mix the losses of both labels (csl sums one epoch's "
                f"loss against each) while scores() reports the first. Give each sample one label: check that the "
                f"indices match the labels and that no target transform or label correction changes them, or pass "
                f"SampleTracker(labels=...) and update() without labels="
            )
        return HarnessError(
            f"update() got labels other than SampleTracker(labels=...) for {count} sample(s) in epoch "
            f"{epoch_number} (first: {first}); the proxies would score them against the update() labels while "
            f"scores() reports the constructor's. Give each sample one label: pass the same labels to both, or "
            f"only one of them (update(idx, logits=...) without labels= reads the constructor's)"
        )
