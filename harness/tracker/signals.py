"""A tracker's recording state on the device: its `RecorderBank` (where the signals are stored, by
the harness's own recorders), the given and predicted labels, how often each sample was presented,
and the non-finite bookkeeping that turns a diverged sample's scores into NaN."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError
from harness.recorders import RecorderBank, Records, RunContext, build_recorder
from harness.recorders.base import GrowingRows
from harness.recorders.train_pass import RunningLossSum
from harness.tracker.eval_passes import EvalPasses
from harness.tracker.inputs import unusable_logits
from harness.tracker.labels import GivenLabels
from harness.tracker.passes import OPENINGS, EpochBatches, whole_passes
from harness.tracker.selection import EVAL_LAST_KEY, LOSS_KEY, TRAIN_KEYS, TRAIN_REQUESTS

_NEVER = torch.iinfo(torch.int64).max  # `first_seen` of a sample not presented this epoch
#: losses= further than this (relative to 1 + the loss) from the cross-entropy of their logits are
#: another loss (`TrackedSignals.other_loss`); a half-precision loss of those logits is well within it
OTHER_LOSS_TOLERANCE = 1e-2


class Presentations:
    """One presentation per sample and epoch: a sampler with replacement, or a repeated index,
    shows a sample again within an epoch, and every row holds one value per sample. The first
    presentation is kept (the rule of the DDP path, where a `DistributedSampler` pads by repeating
    samples); later ones go to the scratch column `n`. Indices given on the host (the usual
    DataLoader case) are checked on the host, where a batch of samples not yet seen this epoch costs
    two numpy lookups and no tensor op; indices on a GPU are checked there without a host sync
    (`first_seen`: each sample's first presentation, its sequence number in the epoch, kept by an
    order-free `amin`, so deterministic on CUDA too; `presented`: the epoch's count per sample; both
    made at the first GPU batch, so a loop with host indices never holds them)."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.seen = np.zeros(n, dtype=bool)  # host indices: presented this epoch
        self.stamp = np.zeros(n, dtype=np.int32)  # host indices: a position in the current batch
        self.positions = np.arange(0, dtype=np.int32)
        self.repeated_host: set[int] = set()  # host indices: samples presented again this epoch
        #: host indices: the epoch's presentations beyond each sample's first (those sent to the scratch column),
        #: what `allowed_repeats` is compared with (`extra`)
        self.extra_host = 0
        #: host indices: how many samples the epoch presented before its first repeat (None: none yet, or
        #: unknown in a state saved before it was kept): all of them, for a loop that misses end_epoch()
        self.first_repeat: int | None = None
        self.batches = EpochBatches()  # the sizes update() got, for drop_last's whole passes (`whole_passes`)
        self.presented: torch.Tensor | None = None  # device indices: (n + 1,) int32
        self.first_seen: torch.Tensor | None = None  # device indices: (n + 1,) int64
        self.sequence = 0  # device indices: presentations so far this epoch
        #: epochs in which each sample was presented: csl sums over those, so a sample that drop_last, a
        #: sampler or a too-large n left out of some epochs scores lower for that reason alone (`absent_report`)
        self.epochs = torch.zeros(n, dtype=torch.int32, device=device)

    def slots(self, idx: torch.Tensor, host: np.ndarray | None = None) -> torch.Tensor:
        """Where each of the batch's values goes: its sample's column at the sample's first
        presentation of the epoch (the first of repeats within the batch), else the scratch column
        `n`. `host`: the same indices as a host array, when the caller has them."""
        return self._device_slots(idx) if host is None else self._host_slots(idx, host)

    def _host_slots(self, idx: torch.Tensor, host: np.ndarray) -> torch.Tensor:
        if not np.count_nonzero(self.seen[host]):  # the usual batch, unless it repeats a sample in itself:
            if len(self.positions) < len(host):  # a repeat's later position overwrites the earlier's
                self.positions = np.arange(len(host), dtype=np.int32)
            positions = self.positions[: len(host)]
            self.stamp[host] = positions
            if not np.count_nonzero(self.stamp[host] != positions):
                self.seen[host] = True
                return idx
        _, first = np.unique(host, return_index=True)
        keep = np.zeros(len(host), dtype=bool)
        keep[first] = True
        keep &= ~self.seen[host]
        if self.first_repeat is None and not keep.all():  # the samples before it are new ones, each once
            self.first_repeat = int(np.count_nonzero(self.seen)) + int(np.argmin(keep))
        self.repeated_host.update(host[~keep].tolist())
        self.extra_host += len(host) - int(np.count_nonzero(keep))
        self.seen[host] = True
        return torch.from_numpy(np.where(keep, host, self.n)).to(idx.device)

    def _device_slots(self, idx: torch.Tensor) -> torch.Tensor:
        if self.presented is None or self.first_seen is None:
            self.presented = torch.zeros(self.n + 1, dtype=torch.int32, device=self.device)
            self.first_seen = torch.full((self.n + 1,), _NEVER, dtype=torch.int64, device=self.device)
        b = idx.shape[0]
        seq = torch.arange(self.sequence, self.sequence + b, device=idx.device)
        self.sequence += b
        self.first_seen.scatter_reduce_(0, idx, seq, "amin")
        self.presented.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
        return torch.where(self.first_seen.index_select(0, idx) == seq, idx, self.n)

    def _repeated_mask(self) -> torch.Tensor:
        if self.presented is None:
            mask = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        else:
            mask = self.presented[: self.n] > 1
        if self.repeated_host:
            mask[torch.as_tensor(sorted(self.repeated_host), device=mask.device)] = True
        return mask

    def repeated(self) -> torch.Tensor:
        """How many samples were presented more than once this epoch (on the device): what the warning names."""
        return self._repeated_mask().sum()

    def extra(self) -> torch.Tensor:
        """The epoch's presentations beyond each sample's first (on the device, read with the epoch's other checks):
        what `allowed_repeats` bounds. A `DistributedSampler` pads with at most world size - 1 extra presentations
        however it spreads them (with fewer samples than ranks, one sample up to world size times), and a sample
        presented 3 times is 2 extra presentations, not 1 repeated sample within the padding's allowance (ddp31)."""
        extra = torch.full((), self.extra_host, dtype=torch.int64, device=self.device)  # a fill: no copy, no sync
        if self.sequence and self.presented is not None:  # every device presentation but each sample's first
            extra = extra + (self.sequence - (self.presented[: self.n] > 0).sum())
        return extra

    def warn(self, count: int, epoch_number: int, extra: int = 0, allowed: object = 0) -> None:
        """Say once, at the first epoch that has them, that repeated presentations are dropped: `count` samples,
        `extra` presentations beyond their first, above `allowed` (`allowed_repeats`)."""
        first = torch.nonzero(self._repeated_mask()).flatten()[:10].tolist()
        text = repeat_message(count, epoch_number, first, self.pass_kind(count), extra, allowed)
        warnings.warn(text, RuntimeWarning, stacklevel=3)

    def whole_passes(self, count: int) -> bool:
        """Whether the epoch's `count` repeated samples came in whole passes over those it presented
        (`harness.tracker.passes`)."""
        return self.pass_kind(count) is not None

    def pass_kind(self, count: int) -> str | None:
        """`passes.whole_passes` of the epoch. Indices on the device: the first repeat comes after the
        presentations numbered 0..f-1, all first ones (`first_seen`); on the host, `first_repeat` (unknown: none).
        A `first_repeat` of 0 (`not_whole_passes`) rules them out on either."""
        if self.first_repeat == 0:
            return None
        if not self.sequence:  # indices on the host alone this epoch
            return whole_passes(count, int(np.count_nonzero(self.seen)), self.first_repeat, self.batches)
        if np.count_nonzero(self.seen) or self.presented is None or self.first_seen is None:  # both kinds
            return None
        firsts = torch.sort(self.first_seen[: self.n][self.presented[: self.n] > 0]).values
        first_repeat = int((firsts == torch.arange(len(firsts), device=firsts.device)).sum())
        return whole_passes(count, len(firsts), first_repeat, self.batches)

    def not_whole_passes(self) -> None:
        """The open epoch's repeats are known to come from elsewhere than a missed `end_epoch()` (a Lightning fit
        resumed within it draws its first batches again: cut at half an epoch, the two halves are one whole pass
        twice, which was taken for epochs closed at once). Kept in the state; the next epoch is judged anew."""
        self.first_repeat = 0

    def forget(self) -> None:
        """Drop the open epoch's presentations without counting it (`SampleTracker.discard_epoch`)."""
        self.seen[:] = False
        self.repeated_host.clear()
        self.extra_host = 0
        self.first_repeat = None
        self.batches.clear()
        if self.presented is not None and self.first_seen is not None:
            self.presented.zero_()
            self.first_seen.fill_(_NEVER)
        self.sequence = 0

    def reset(self) -> None:
        """Close the epoch: count it for the samples it presented, then forget who was seen (`forget`)."""
        presented = torch.from_numpy(self.seen).to(self.device)  # one (N,) copy per epoch, no sync
        if self.sequence and self.presented is not None:
            presented = presented | (self.presented[: self.n] > 0)
        self.epochs += presented
        self.forget()


class TrackedSignals:
    """Everything one tracker records, allocated on the device of the first tensor it sees.

    The bank's context is open-ended (no epoch count, no data): per-epoch recorders grow a row per
    epoch; the eval passes the user runs are `evals` (`harness.tracker.eval_passes`).

    One presentation per sample and epoch (`Presentations`): repeats within an epoch go to a
    scratch column `n` of the training-pass buffers (n + 1 wide, the scratch dropped at `to_host`).
    """

    def __init__(self, n: int, device: torch.device, train_keys: tuple[str, ...], running_sums: bool,
                 keep_eval_history: bool, fixed_labels: np.ndarray | None) -> None:
        self.n, self.device = n, device
        self.ctx = RunContext(None, None, None, 0, device, samples=n + 1)  # + the scratch column
        self.bank = RecorderBank(self.ctx, timed=False)
        if running_sums:
            self.bank.add(LOSS_KEY, RunningLossSum(self.ctx))
        else:
            for key in train_keys:
                self.bank.add(key, build_recorder(TRAIN_REQUESTS[key], self.ctx))
        self.labels = GivenLabels(n, device, fixed_labels)  # one label per sample, or the proxies mix two
        # its tensors by the names the eval passes and `harness.tracker.state` use (all change them in place)
        self.given, self.keep_labels, self.label_conflicts = self.labels.given, self.labels.keep, self.labels.conflicts
        self.evals = EvalPasses(self.bank, self.given, n, device, keep_eval_history)
        self.pred = torch.full((n + 1,), -1, dtype=torch.int64, device=device)
        self.presentations = Presentations(n, device)
        self.non_finite_now = torch.zeros(n + 1, dtype=torch.int32, device=device)  # this epoch's, per sample
        self.non_finite_train = torch.zeros(n, dtype=torch.bool, device=device)  # any epoch's
        self.other_loss = torch.zeros((), dtype=torch.int64, device=device)  # this epoch's (`other_losses`)

    # -- training batches and epochs ---------------------------------------------------------------
    def record_batch(self, epoch: int, idx: torch.Tensor, losses: torch.Tensor | None, logits: torch.Tensor | None,
                     labels: torch.Tensor | None, flag_logits: bool, host: np.ndarray | None = None) -> torch.Tensor:
        """One batch to the bank (without logits: train_loss only), the labels, and the count of samples whose
        loss (or logits, when `flag_logits`) are not finite: no host sync. Indices in [0, n) (`Inputs`); the slots."""
        if losses is not None:
            loss = losses.float()
            if logits is not None and labels is not None:  # the spec's loss, or another (`warn_other_loss`)
                self.other_loss += other_losses(loss, logits, labels)
        else:  # update() gives losses, or logits with labels (the constructor's when it had none)
            assert logits is not None and labels is not None
            loss = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        slot = self.presentations.slots(idx, host)
        if logits is not None:
            self.pred.index_copy_(0, slot, logits.argmax(1))
        self.bank.on_batch(epoch, slot, logits, loss, labels)
        if labels is not None:
            self.labels.record(idx, slot, labels)
        bad = ~torch.isfinite(loss)
        if flag_logits:  # -inf logits of other classes (class masks) are no fault (`unusable_logits`)
            assert logits is not None and labels is not None  # flagged only for logits, which come with labels
            bad |= unusable_logits(logits, labels)
        self.non_finite_now.index_add_(0, slot, bad.to(torch.int32))
        return slot  # each value's column: its sample's, or the scratch n (`Presentations.slots`)

    def epoch_checks(self, bad_index: torch.Tensor) -> tuple[bool, bool, int, int, int, int]:
        """The epoch's deferred checks in one device-to-host read: (an index out of range, a signal not
        finite, samples presented more than once, presentations beyond each sample's first, samples of
        another label than before, losses= not the cross-entropy of their logits)."""
        conflicts = (self.label_conflicts > 0).sum()
        p = self.presentations
        checks = torch.stack([bad_index.long(), self.non_finite_now[: self.n].any().long(), p.repeated(),
                              p.extra(), conflicts.long(), self.other_loss])
        bad, non_finite, repeated, extra, conflicted, other = checks.tolist()
        self.other_loss.zero_()
        return bool(bad), bool(non_finite), repeated, extra, conflicted, other

    def label_conflict_error(self, count: int, epoch_number: int) -> HarnessError:
        return self.labels.conflict_error(count, epoch_number)

    def close_epoch(self, epoch: int) -> None:
        self.bank.on_epoch_end(epoch, 1, None)  # the running sum folds the epoch in
        self.labels.close()
        self.presentations.reset()

    def discard_epoch(self, epochs: int) -> None:
        """Forget what the open epoch (after `epochs` closed ones) recorded: its rows, its running
        loss, its presentations and its deferred checks. The latest predictions (`pred`, shown by
        `suspects` without an eval pass) keep the discarded batches' where they overwrote them."""
        for key in self.bank:
            recorder = self.bank[key]
            for buf in recorder.buffers.values():
                if isinstance(buf, GrowingRows) and key != self.evals.key:
                    del buf.rows[epochs:]
            running = getattr(recorder, "epoch_row", None)
            if running is not None:
                running.fill_(float("nan"))
        self.labels.forget()  # the labels as of the last end_epoch()
        self.non_finite_now.zero_()
        self.other_loss.zero_()
        self.presentations.forget()

    def close_non_finite_epoch(self, epoch_number: int) -> None:
        """Fold this epoch's non-finite samples into the record (their scores become NaN) and warn
        at the first epoch that has any, so a loop that keeps going is told at once."""
        now = self.non_finite_now[: self.n] > 0
        if not bool(self.non_finite_train.any()):
            samples = torch.nonzero(now).flatten().tolist()
            warnings.warn(
                f"SampleTracker: non-finite loss or logits (NaN or inf) for {len(samples)} sample(s) in epoch "
                f"{epoch_number} (first: {samples[:10]}); they will score NaN in the proxies that read the "
                f"training pass. Lower the learning rate, or check these samples' inputs and labels",
                RuntimeWarning,
                stacklevel=3,
            )
        self.non_finite_train |= now
        self.non_finite_now.zero_()

    # -- results -------------------------------------------------------------------------------
    def to_host(self, epochs: int) -> tuple[Records, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray,
                                            np.ndarray]:
        """(records by key, non-finite flags by key, samples eval passes left out by key, given labels,
        predicted labels) on the host."""
        arrays = self.bank.arrays(rows=epochs)
        for key in TRAIN_KEYS:  # drop the scratch column of repeated presentations
            if key in arrays:
                arrays[key] = {name: values[:, : self.n] for name, values in arrays[key].items()}
        train_flags = self.non_finite_train.cpu().numpy()
        non_finite = {key: train_flags for key in TRAIN_KEYS}
        missing: dict[str, np.ndarray] = {}
        self.evals.offer(arrays, non_finite, missing, epochs)
        pred = self.pred[: self.n].cpu().numpy()
        if EVAL_LAST_KEY in arrays:  # the final model's eval-mode prediction beats the last batches'
            probs = arrays[EVAL_LAST_KEY]["probs_last"]
            pred = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs, nan=0.0).argmax(1))
        return Records(arrays), non_finite, missing, self.given[: self.n].cpu().numpy(), pred


def other_losses(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many of a batch's `losses=` (float32) are not the cross-entropy of its logits: another
    loss than methods.md's per-sample cross-entropy (a device count, read at `end_epoch`)."""
    plain = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return ((loss - plain).abs() > OTHER_LOSS_TOLERANCE * (1 + plain.abs())).sum()


def repeat_message(count: int, epoch_number: int, first: list[int], kind: str | None, extra: int,
                   allowed: object) -> str:
    """The repeated-presentations warning (`Presentations.warn`): `count` samples (`first` of them), `extra`
    presentations beyond each sample's first, above `allowed`; `kind`: the whole passes they came in, if any."""
    # every sample came again, in whole passes: a loop that calls end_epoch() once after all its epochs, or
    # that passes batch positions (arange(B), enumerate) for indices; not a sampler with replacement, which
    # repeats a sample before it has shown the others (one drawing 5 x len(dataset) repeats every sample)
    missed = "" if kind is None else (
        f" {OPENINGS[kind]}: if the loop calls end_epoch() once after all its epochs, call end_epoch() after "
        "each epoch, or the epochs count as one and csl holds the first epoch's losses only; if it passes batch "
        "positions (arange(B), enumerate) for indices, pass each sample's index in the dataset (WithIndex), "
        "not its position in the batch. A sampler drawing more than len(dataset) indices an epoch without "
        "replacement (RandomSampler(num_samples=...)) does this too.")
    return (f"SampleTracker: {count} sample(s) were presented more than once in epoch {epoch_number} "
            f"(first: {first}); each keeps its first presentation of the epoch (loss, logits, label) and the "
            f"later ones are not recorded, as under DDP.{missed} A sampler with replacement or repeated indices "
            f"do this; iterate over every sample once per epoch for one value per sample ({extra} presentation(s) "
            f"beyond each sample's first this epoch, above tracker.allowed_repeats = {allowed})")


def warn_other_loss(count: int, epoch_number: int) -> None:
    """Say once that `csl` sums a loss other than the spec's (methods.md: per-sample cross-entropy
    against the labels trained on), while the proxies reading logits use plain cross-entropy."""
    warnings.warn(
        f"SampleTracker: the losses= of {count} presentation(s) in epoch {epoch_number} differ from the "
        f"cross-entropy of their logits= and labels (label smoothing, class weights, mixup, focal loss, a loss "
        f"divided for gradient accumulation?). csl sums the losses as passed, while aum, forgetting, el2n and "
        f"the other proxies read the logits against the labels; the specified csl sums plain per-sample "
        f"cross-entropy: pass logits= and labels= without losses= and the tracker computes it (to sum your "
        f"own loss, keep losses= and ignore this warning)",
        RuntimeWarning,
        stacklevel=3,
    )
