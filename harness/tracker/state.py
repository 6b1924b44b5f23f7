"""A tracker's state for a checkpoint (`SampleTracker.state_dict` / `load_state_dict`).

A preempted or resumed training run would otherwise lose every epoch recorded so far, and a fresh
tracker would then sum csl over the epochs after the resume only, with no sign in the scores. The
state holds everything a tracker recorded -- closed epochs and the one in progress, eval passes,
labels, presentation counts -- as CPU tensors, numbers, strings and lists, so `torch.save` writes
it, `torch.load(weights_only=True)` (Lightning's default) reads it, and the tracker that loads it
goes on exactly where the saved one stopped. A state is refused, before anything is touched, by a
tracker of another n, another proxy selection, other constructor labels or `running_sums`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.recorders.base import GrowingRows, Recorder

if TYPE_CHECKING:
    from harness.tracker.core import SampleTracker
    from harness.tracker.signals import TrackedSignals

FORMAT, VERSION = "memprox.SampleTracker", 1


def _copy(t: torch.Tensor | None) -> torch.Tensor | None:
    """A host copy that later writes to the tracker cannot change (`.cpu()` alone aliases CPU tensors)."""
    return None if t is None else t.detach().to("cpu", copy=True)


def _config(tracker: SampleTracker) -> dict[str, Any]:
    """What must match between the saved tracker and the one resuming it."""
    selected = tracker._selection.selected
    labels = tracker._fixed_labels
    return {"n": tracker.n, "running_sums": bool(tracker.running_sums),
            "proxies": None if selected is None else [p.label for p in selected],
            "labels": None if labels is None else torch.from_numpy(labels.copy())}


def capture(tracker: SampleTracker) -> dict[str, Any]:
    """The tracker's whole state as plain, host-side values."""
    state = {"format": FORMAT, "version": VERSION, **_config(tracker), "epochs": tracker.epochs,
             "num_classes": tracker.num_classes, "pending": tracker._pending,
             "all_batches_had_logits": tracker._all_batches_had_logits,
             "warned_repeats": tracker._warned_repeats, "eval_at": list(tracker._eval_at), "signals": None}
    signals = tracker._signals
    if signals is not None:
        state["signals"] = _signals_state(signals, tracker._inputs.bad)
    return state


def _signals_state(s: TrackedSignals, bad_index: torch.Tensor) -> dict[str, Any]:
    p = s.presentations
    running = s.bank["train_loss"] if "train_loss" in s.bank else None
    return {
        "bank": {key: _buffers(s.bank[key]) for key in s.bank},
        "running_row": _copy(getattr(running, "epoch_row", None)),
        "given": _copy(s.given), "pred": _copy(s.pred), "non_finite_now": _copy(s.non_finite_now),
        "non_finite_train": _copy(s.non_finite_train), "label_conflicts": _copy(s.label_conflicts),
        "bad_index": _copy(bad_index), "eval_flags": [_copy(f) for f in s.evals.flags],
        "seen": torch.from_numpy(p.seen.copy()), "repeated": sorted(p.repeated_host),
        "presented": _copy(p.presented), "first_seen": _copy(p.first_seen), "sequence": p.sequence,
        "epochs_presented": _copy(p.epochs),
    }


def _buffers(rec: Recorder) -> dict[str, Any]:
    """A recorder's buffers: a growing (epochs, N) one as its list of rows."""
    return {name: [_copy(r) for r in buf.rows] if isinstance(buf, GrowingRows) else _copy(buf)
            for name, buf in rec.buffers.items()}


def check(tracker: SampleTracker, state: Any) -> None:
    """A HarnessError, before anything changes, when `state` cannot resume this tracker."""
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise HarnessError("load_state_dict(): not a SampleTracker state (use what SampleTracker.state_dict() "
                           "returned, or CSLCallback's entry of a Lightning checkpoint)")
    if state.get("version") != VERSION:
        raise HarnessError(f"load_state_dict(): the state has format version {state.get('version')!r}; this memprox "
                           f"reads version {VERSION}")
    if tracker._device is not None or tracker._finished or tracker.epochs:
        raise HarnessError("load_state_dict() resumes a new tracker: call it before the first update(), "
                           "eval_epoch() or scores()")
    mine = _config(tracker)
    for key, what in (("n", "samples (n)"), ("running_sums", "running_sums"), ("proxies", "proxies")):
        if state.get(key) != mine[key]:
            raise HarnessError(f"load_state_dict(): the state was saved by a tracker with {what} = "
                               f"{state.get(key)!r}, this one has {mine[key]!r}; a state resumes only the same "
                               f"tracker on the same dataset (SampleTracker(n, proxies=..., labels=..., "
                               f"running_sums=...) as when it was saved)")
    saved, own = state.get("labels"), mine["labels"]
    if (saved is None) != (own is None) or (own is not None and not torch.equal(torch.as_tensor(saved), own)):
        raise HarnessError("load_state_dict(): the state was saved by a tracker with other constructor labels "
                           "(SampleTracker(labels=...)); pass the same labels, or none if it had none")


def restore_counters(tracker: SampleTracker, state: Mapping[str, Any]) -> None:
    """The plain values; the recorded signals follow on the device (`restore_signals`)."""
    tracker.epochs = int(state["epochs"])
    tracker.num_classes = state["num_classes"]
    tracker._pending = bool(state["pending"])
    tracker._all_batches_had_logits = bool(state["all_batches_had_logits"])
    tracker._warned_repeats = bool(state["warned_repeats"])
    tracker._eval_at = list(state["eval_at"])


def restore_signals(s: TrackedSignals, bad_index: torch.Tensor, state: Mapping[str, Any], classes: int | None,
                    eval_at: list[int]) -> None:
    """Write a `_signals_state` into freshly made signals on their device."""
    dev = s.device

    def put(target: torch.Tensor, value: torch.Tensor) -> None:
        if target.shape != value.shape:
            raise HarnessError(f"load_state_dict(): a saved buffer has shape {tuple(value.shape)}, this tracker's "
                               f"{tuple(target.shape)}; the state does not fit this tracker")
        target.copy_(value)

    for key, buffers in state["bank"].items():
        if key not in s.bank:  # the eval pass recorder, made at the first pass
            s.evals.recorder(int(classes or 0))
        rec = s.bank[key]
        for name, value in buffers.items():
            buf = rec.buffers[name]
            if isinstance(buf, GrowingRows):
                buf.rows = [r.to(dev, copy=True) for r in value]
            else:
                put(buf, value)
    if state["running_row"] is not None:
        put(s.bank["train_loss"].epoch_row, state["running_row"])
    for name in ("given", "pred", "non_finite_now", "non_finite_train", "label_conflicts"):
        if state[name] is not None:
            put(getattr(s, name), state[name])
    put(bad_index, state["bad_index"])
    s.evals.at = list(eval_at)
    s.evals.flags = [f.to(dev, copy=True) for f in state["eval_flags"]]
    p = s.presentations
    p.seen[:] = np.asarray(state["seen"].numpy(), dtype=bool)
    p.repeated_host = set(state["repeated"])
    p.sequence = int(state["sequence"])
    p.presented = None if state["presented"] is None else state["presented"].to(dev, copy=True)
    p.first_seen = None if state["first_seen"] is None else state["first_seen"].to(dev, copy=True)
    put(p.epochs, state["epochs_presented"])


class TrackerCheckpoints:
    """`SampleTracker`'s checkpoint API (its state lives in the tracker, see `SampleTracker`)."""

    @property
    def finished(self) -> bool:
        """Whether recording ended (`scores()`, `suspects()` or `finish()` ran): no state to save then."""
        return self._finished

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far (the epoch in progress included) as CPU tensors and plain
        values: save it with your checkpoint (`torch.save`), so that a resumed run keeps the epochs
        before the interruption. Costs one copy of the buffers to the host."""
        self._check_open("state_dict")
        if self._saved is not None:  # loaded and not used since: the state as loaded
            return {**self._saved, **{k: v for k, v in capture(self).items() if k != "signals"}}
        return capture(self)

    def load_state_dict(self, saved: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Resume from `state_dict()`'s value, in a new tracker made with the same arguments (n,
        proxies, labels, running_sums; a state from another dataset size or selection is refused).
        The recorded signals go to `device`, else to the device of the next update() or eval_epoch()."""
        check(self, saved)
        restore_counters(self, saved)
        self._saved = dict(saved) if saved["signals"] is not None else None
        if device is not None:
            self._ensure_device(torch.device(device), "load_state_dict()")

    def _restore_now(self, where: str) -> None:
        """A loaded state needed before any batch told the device: where it was loaded to."""
        if self._device is None and self._saved is not None:
            self._ensure_device(self._saved["signals"]["given"].device, where)
