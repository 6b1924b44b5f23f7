"""`SampleTracker`'s checkpoint API (`TrackerCheckpoints`: `state_dict`, `load_state_dict`, `copy`) and what a
resumed tracker does with a state's gaps (`warn_unknown_closed`). The state itself -- what it holds, its checks,
how it is written back onto the device -- is `harness.tracker.state`'s job: kept apart so that each has room."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from harness.tracker.fields import TrackerFields
from harness.tracker.state import capture, check, restore_counters

if TYPE_CHECKING:
    from harness.tracker.core import SampleTracker

_COUNTERS = ("epochs", "num_classes", "_pending", "_all_batches_had_logits", "_had_logits_closed",
             "_closed_logits_unknown", "_warned_repeats", "_eval_at", "_saved", "_no_suggestion", "_replay",
             "_allowed_repeats", "_resumed_allowance", "_warned_other_loss")


def warn_unknown_closed(tracker: TrackerFields) -> None:
    """After `discard_epoch` of an open epoch resumed from a state that did not keep whether its closed epochs
    had logits in every batch (`restore_counters`): the default scores leave the logit proxies out, said once."""
    if not tracker._closed_logits_unknown:
        return
    tracker._closed_logits_unknown = False
    warnings.warn(
        "SampleTracker: the discarded epoch was resumed from a state saved mid-epoch, after a batch without "
        "logits (update(losses=...) alone), by a memprox that did not keep whether the closed epochs had logits "
        "in every batch; they are taken not to, so scores() leaves aum, el2n, forgetting, ... out (csl stays) "
        "and refuses them when named. To keep them, resume from a checkpoint saved at an epoch's end (after "
        "end_epoch())", RuntimeWarning, stacklevel=3)


class TrackerCheckpoints(TrackerFields):
    """`SampleTracker`'s checkpoint API (its state lives in the tracker, see `SampleTracker`)."""

    @property
    def allowed_repeats(self) -> int:
        """Extra presentations an epoch may have without a warning -- presentations beyond each sample's
        first, so a sample presented 3 times counts 2 (gap31) -- the DDP integrations and update(gather=True)
        raise it to cover a `DistributedSampler`'s padding (world size - 1 extra presentations); set it for
        a sampler that repeats on purpose. After `load_state_dict` of a state saved mid-epoch, the saved
        run's allowance also covers that open epoch (its batches came from that run's world), up to the
        first update() of the next epoch: from there this run's own -- a run resumed in another world size
        warns about the repeats of its own sampler as a run never saved would (atttr31)."""
        own, resumed = self._allowed_repeats, self._resumed_allowance
        return own if not resumed else max(own, resumed)

    @allowed_repeats.setter
    def allowed_repeats(self, value: int) -> None:
        self._allowed_repeats = value

    def _allow_repeats(self, count: int) -> None:
        """This run's allowance raised to `count` (update(gather=True)'s rule, and the integrations' padding):
        a larger one set before stays, and a resumed state's stays its open epoch's only."""
        self._allowed_repeats = max(self._allowed_repeats, count)

    @property
    def finished(self) -> bool:
        """Whether recording ended (`scores()`, `suspects()` or `finish()` ran): no state to save then."""
        return self._finished

    def copy(self) -> SampleTracker:
        """A new tracker holding this one's record so far (the open epoch included), made with the
        same arguments: `tracker.copy().scores()` looks at the scores during training, while
        `scores()` on the tracker itself ends its recording. Costs one copy of the buffers to the
        host. The tracker is left as it was: the batches it holds unrecorded (`batch_log`) are held
        by the copy too, copied, so a peek changes nothing either of them scores later (recording
        them would let a `discard_epoch()` keep their predictions in `suspects()`); the copy makes
        its buffers on the device of its next update(), as a resumed tracker does."""
        from harness.tracker.core import SampleTracker  # the class this mixin is part of

        self._check_open("copy")
        selected = self._selection.selected
        twin = SampleTracker(self.n, proxies=None if selected is None else list(selected),
                             labels=self._fixed_labels, running_sums=self.running_sums, suggest=self._suggest)
        twin._allowed_repeats = self._allowed_repeats
        held = self._log.held() if self._log is not None else self._replay
        twin.load_state_dict(self._state())
        # what the state leaves out or infers from a saved run: this tracker's own values
        twin._no_suggestion, twin._had_logits_closed = self._no_suggestion, self._had_logits_closed
        twin._closed_logits_unknown = self._closed_logits_unknown
        twin._warned_other_loss = self._warned_other_loss
        twin._resumed_allowance = self._resumed_allowance  # the state has the sum of both: the parts as here
        # held on the copy's device once it has one (the next update()'s, or the host's to score)
        twin._replay = None if held is None else held.to(torch.device("cpu"))
        return twin

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far (the epoch in progress included) as CPU tensors and plain
        values: save it with your checkpoint (`torch.save`), so that a resumed run keeps the epochs
        before the interruption. Costs one copy of the buffers to the host."""
        self._check_open("state_dict")
        if self._replay is not None:  # a copy holding the batches of the tracker it copies
            self._restore_now("state_dict()")
        self._flush()  # the batches held for recording (`harness.tracker.batch_log`) are recorded state
        return self._state()

    def _state(self) -> dict[str, Any]:
        """The recorded state, without the batches the log holds."""
        if self._saved is not None:  # loaded and not used since: the state as loaded
            return {**self._saved, **{k: v for k, v in capture(self).items() if k != "signals"}}
        return capture(self)

    def load_state_dict(self, saved: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Resume from `state_dict()`'s value, in a new tracker made with the same arguments (n,
        proxies, labels, running_sums; a state from another dataset size or selection is refused).
        The recorded signals go to `device`, else to the device of the next update() or eval_epoch()."""
        check(self, saved)
        before = {name: getattr(self, name) for name in _COUNTERS}
        restore_counters(self, saved)
        self._replay = None  # a copy's batches (`copy`) belong to the record this state replaces
        self._saved = dict(saved) if saved["signals"] is not None else None
        if device is not None:
            try:
                self._ensure_device(torch.device(device), "load_state_dict()")
            except BaseException:  # e.g. no such device: the tracker stays as it was, to load again
                for name, value in before.items():
                    setattr(self, name, value)
                raise

    def _restore_now(self, where: str) -> None:
        """A loaded state needed before any batch told the device: where it was loaded to."""
        if self._device is None and self._saved is not None:
            self._ensure_device(self._saved["signals"]["given"].device, where)
