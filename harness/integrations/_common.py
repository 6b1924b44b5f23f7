"""What both trainer integrations share: the index-carrying dataset wrapper, and a recorder that
feeds one `SampleTracker` from one process or from every rank of a DDP job.

One process: each batch goes to `SampleTracker.update` as it is, so a callback's scores are the
plain loop's, bitwise. Several processes (torch.distributed initialised, world size > 1): every
rank sees only its shard of the batch, so the recorder first gathers (indices, losses, logits,
labels) from all ranks -- batches of unequal size included; `SampleTracker.update(..., gather=True)`,
`harness.tracker.gather`, the gather a user's own loop calls too -- and every rank then records the same
global batch (rank 0's samples first), so `scores()` works on any rank and all ranks agree. A
`DistributedSampler` pads the epoch by repeating a few samples so every rank gets as many; the
tracker keeps a sample's first presentation of an epoch (its presentation as a member of the
epoch, not as padding), the rule of a single-process run too, so each sample contributes one loss
per epoch. Up to world size - 1 extra presentations per epoch (beyond each sample's first: the most padding
there can be) pass without the tracker's warning about repeated samples; under Accelerate (the Hugging Face
`Trainer`), whose `even_batches` completes every rank's last batch with the epoch's first samples,
up to world size x the per-device batch size - 1 (`DistributedRecorder.padding_batch`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.tracker import SampleTracker
from harness.tracker.gather import world_size

__all__ = ["DistributedRecorder", "OneTraining", "WithIndex", "concurrent_training", "world_size"]


class WithIndex(torch.utils.data.Dataset):
    """Wraps a map-style dataset so each item carries its index: a tuple item `(x, y)` becomes
    `(x, y, index)`, a dict item gets the key `key` (default "sample_index", the name the Hugging
    Face integration looks for). The index is what ties a loss to its sample in the scores."""

    def __init__(self, dataset: Any, key: str = "sample_index") -> None:
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        if isinstance(item, dict):
            if self.key in item:
                raise HarnessError(f"WithIndex: the dataset's items already have a {self.key!r} key; pass key=...")
            return {**item, self.key: i}
        if isinstance(item, (tuple, list)):
            return (*item, i)
        return (item, i)


#: Guards `OneTraining`'s check-and-set; module-level, so that a callback still pickles (Ray Tune
#: copies the Trainer with its callbacks into each trial's worker, Lightning's ddp_spawn too).
_CLAIMS = threading.Lock()


class OneTraining:
    """Refuses a second training that would record into the same callback while one runs in another
    thread. Optuna's `n_jobs > 1` runs trials in threads: those of `hyperparameter_search` share one
    `Trainer` and its callback, where one trial's start empties the record another trial is filling and
    both trials' losses land in one record, so the scores are no trial's (seen: a finished search whose
    scores matched none of its trials). The owner is a thread id, not a lock, so the callback pickles;
    an owner whose thread has ended (a training that died without its release) blocks nothing."""

    def __init__(self) -> None:
        self.owner: int | None = None

    def claim(self, refusal: str) -> None:
        """Take the callback for this thread, or raise `refusal` if another live thread trains with it."""
        with _CLAIMS:
            if self.elsewhere():
                raise HarnessError(refusal)
            self.owner = threading.get_ident()

    def elsewhere(self) -> bool:
        """Whether another thread, still alive, holds the callback."""
        owner = self.owner
        return owner is not None and owner != threading.get_ident() and any(
            t.ident == owner for t in threading.enumerate())

    def release(self) -> bool:
        """The training of this thread ended (returned or raised). False for a training refused while
        another thread holds the callback, whose error handling must then leave the record alone."""
        with _CLAIMS:
            if self.elsewhere():
                return False
            self.owner = None
            return True


def concurrent_training(who: str, advice: str) -> str:
    """`OneTraining`'s refusal, for the callback named `who`; `advice`: how to train apart."""
    return (f"{who}: a training with this callback is already running in another thread; two trainings recording "
            f"into one callback mix their losses, and one's start can empty the other's record. {advice}")


class DistributedRecorder:
    """Feeds `tracker` one batch at a time; gathers across ranks when there are several, with the
    tracker's own `update(..., gather=True)` (`harness.tracker.gather`), the one a user's loop calls."""

    def __init__(self, tracker: SampleTracker) -> None:
        self.tracker = tracker
        self.batches = 0  # recorded in the epoch in progress
        self.closed_with = 0  # batches of the last epoch closed: a checkpoint at its last batch holds them open
        #: samples per rank the sampler may repeat to even out an epoch: 1 for a `DistributedSampler`,
        #: the per-device batch size for Accelerate's `even_batches` (which refills whole batches)
        self.padding_batch = 1

    def update(self, indices: Any, *, losses: torch.Tensor | None = None, logits: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> None:
        self.tracker.update(indices, losses=losses, logits=logits, labels=labels, gather=True)
        self._allow_padding()  # after the update: a refused one changes nothing, the allowance included
        self.batches += 1

    def _allow_padding(self) -> None:
        """A sampler's padding is no surprise: the tracker allows the repeats of this world's padding; a larger value
        the user set is kept (update()'s rule). Raised through `_allow_repeats`, not `allowed_repeats = max(...)`:
        that would make a resumed checkpoint's allowance, its open epoch's only, this run's (atttr31)."""
        world = world_size()
        self.tracker._allow_repeats(world * self.padding_batch - 1 if world > 1 else 0)

    def end_epoch(self) -> None:
        self.tracker.end_epoch()
        self.closed_with, self.batches = self.batches, 0

    def not_whole_passes(self) -> None:
        """The open epoch goes on with batches drawn again (a fit resumed within it): its repeats are no sign of
        a loop missing `end_epoch()`, which the tracker's repeat warning would otherwise suggest
        (`Presentations.not_whole_passes`)."""
        tracker = self.tracker
        tracker._restore_now("CSLCallback")  # a loaded record not yet on its device: made there now
        if tracker._signals is not None:
            tracker._signals.presentations.not_whole_passes()

    def drop_open_epoch(self, stopped: str) -> None:
        """A fit that raised (or was interrupted) mid-epoch: its partial epoch is dropped, so the
        record holds the epochs completed before it -- scored by scores(), and continued by a later
        fit -- never half an epoch summed as a whole one. `stopped` begins the warning."""
        if self.batches and not self.tracker.finished:
            done = self.tracker.epochs
            self.tracker.discard_epoch()
            self.batches = 0
            warnings.warn(f"{stopped} in epoch {done + 1}; that epoch's batches are dropped from the record, which "
                          f"holds the {done} completed epoch(s)", RuntimeWarning, stacklevel=3)

    def close_epoch_before(self, epoch: int) -> None:
        """At a resume: a checkpoint saved after an epoch's last batch, before its end, holds that
        epoch still open, while the trainer goes on with `epoch` (whole epochs done): close it."""
        if self.batches and epoch > self.tracker.epochs:
            self.end_epoch()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the tracker's record, the batches of the epoch in progress, and the padding
        allowance its updates set (the tracker's state keeps `allowed_repeats` too since tracker31; kept here as
        well for a memprox before it, whose tracker state left it out; `resume`)."""
        return {"tracker": self.tracker.state_dict(), "batches": self.batches,
                "allowed_repeats": self.tracker.allowed_repeats}

    def resume(self, saved: dict[str, Any], device: Any, who: str, epoch: int) -> None:
        """Take a checkpoint's `state()`, for a trainer going on with `epoch` (whole epochs done). A
        tracker that recorded already (the same callback trained on, in a second fit / train call)
        keeps its record when the checkpoint resumes to just that record: its own last checkpoint, or
        one saved at its last epoch's last batch (`_closes_to`); any other would count epochs twice or
        drop some."""
        tracker = self.tracker
        if not (tracker.finished or tracker.epochs or self.batches):
            state, allowed = saved["tracker"], saved.get("allowed_repeats")
            # the open epoch's padding was allowed by its updates: an epoch closed at the resume before any update
            # (`close_epoch_before`) was warned of it. The tracker's state keeps it since tracker31; one saved before
            # gets the checkpoint's own, for that open epoch only (`SampleTracker.allowed_repeats`), as a new state
            if (isinstance(state, dict) and "allowed_repeats" not in state and isinstance(allowed, int)
                    and not isinstance(allowed, bool) and allowed >= 0):
                state = {**state, "allowed_repeats": allowed}
            tracker.load_state_dict(state, device=device)
            self.batches, self.closed_with = int(saved["batches"]), 0
            if "allowed_repeats" not in state:  # a checkpoint before the allowance was kept: this world's padding
                self._allow_padding()
            return
        ours, theirs = (tracker.epochs, self.batches), (int(saved["tracker"]["epochs"]), int(saved["batches"]))
        if tracker.finished or not (ours == theirs or self._closes_to(theirs, epoch)):
            what = "ended its record (scores())" if tracker.finished else (
                f"recorded {ours[0]} epoch(s) and {ours[1]} batch(es), the checkpoint holds {theirs[0]} and "
                f"{theirs[1]}")
            raise HarnessError(f"{who}: this callback {what}; it goes on with its own record only from a checkpoint "
                               f"that holds that record (its last, or one saved at its last epoch's last batch), "
                               f"else epochs would count twice or go missing: resume from this checkpoint with a "
                               f"new {who} (the same arguments), which takes the checkpoint's record")

    def _closes_to(self, theirs: tuple[int, int], epoch: int) -> bool:
        """A checkpoint saved at the last batch of this record's last epoch, before that epoch's end
        (a step checkpoint landing there), holds the epoch open with the batches it closed with; the
        trainer resuming after it (`epoch` past it) closes it (`close_epoch_before`), so the record
        the checkpoint resumes to is this one, bitwise. A trainer that goes on in that epoch (a
        checkpoint of a fit cut there by `max_steps`) would add batches to an epoch this record
        closed: refused."""
        epochs, batches = theirs
        return (batches > 0 and self.batches == 0 and self.tracker.epochs == epochs + 1
                and self.closed_with == batches and epoch > epochs)


def check_indices(indices: Any, where: str, contract: str) -> None:
    """A clear error when a batch carries no usable sample indices."""
    ok = isinstance(indices, torch.Tensor) or isinstance(indices, (np.ndarray, Sequence))
    if indices is None or not ok:
        raise HarnessError(f"{where}: no sample indices ({type(indices).__name__}); {contract}")
