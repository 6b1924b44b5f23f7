"""A tracker's state for a checkpoint (`SampleTracker.state_dict` / `load_state_dict`, the API in
`harness.tracker.checkpoints`): what it holds (`capture`), its checks (`check`), and how a tracker takes it
back (`restore_counters`, then `restore_signals` on the device).

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
from typing import Any

import torch

from harness.errors import HarnessError
from harness.recorders.base import GrowingRows, Recorder
from harness.tracker.class_probs import ClassProbSums
from harness.tracker.fields import TrackerFields
from harness.tracker.selection import LOSS_KEY
from harness.tracker.signals import Presentations, TrackedSignals

FORMAT, VERSION = "memprox.SampleTracker", 1
#: why a tracker resumed from a state saved before the suggested label existed has none
OLD_STATE = ("the tracker state was saved by a memprox without the suggested label, so its epochs have no class "
             "probabilities; a new run records them")
#: why a tracker asking for the suggested label resumed from a state saved without its sums has none
NO_SUMS_SAVED = ("the tracker state was saved by a tracker that did not record the class probabilities (suggest=False, "
                 "or over the default size bound), so its epochs have none; a run made with suggest=True from its "
                 "first epoch records them")


def _copy(t: torch.Tensor | None) -> torch.Tensor | None:
    """A host copy that later writes to the tracker cannot change (`.cpu()` alone aliases CPU tensors)."""
    return None if t is None else t.detach().to("cpu", copy=True)


def _config(tracker: TrackerFields) -> dict[str, Any]:
    """What must match between the saved tracker and the one resuming it."""
    selected = tracker._selection.selected
    labels = tracker._fixed_labels
    return {"n": tracker.n, "running_sums": bool(tracker.running_sums),
            "proxies": None if selected is None else [p.label for p in selected],
            "labels": None if labels is None else torch.from_numpy(labels.copy())}


def capture(tracker: TrackerFields) -> dict[str, Any]:
    """The tracker's whole state as plain, host-side values."""
    state = {"format": FORMAT, "version": VERSION, **_config(tracker), "epochs": tracker.epochs,
             "num_classes": tracker.num_classes, "pending": tracker._pending,
             "all_batches_had_logits": tracker._all_batches_had_logits,
             "had_logits_closed": tracker._had_logits_closed,  # what discard_epoch() of the open epoch goes back to
             "warned_repeats": tracker._warned_repeats, "eval_at": list(tracker._eval_at), "signals": None,
             "no_suggestion": tracker._no_suggestion,
             # update(gather=True)'s allowance for a sampler's padding: an epoch closed right after a resume has
             # had no update() to set it again (tracker31)
             "allowed_repeats": _saved_allowance(tracker),
             "warned_other_loss": tracker._warned_other_loss}  # said once a run, a resumed one included
    if tracker._closed_logits_unknown:  # resumed from a state without it: saved again, still unknown
        del state["had_logits_closed"]
    signals = tracker._signals
    if signals is not None:
        assert tracker._inputs is not None  # made with the signals (`_ensure_device`)
        state["signals"] = _signals_state(signals, tracker._inputs.bad)
        probs = tracker._class_probs
        state["signals"]["class_probs"] = None if probs is None else probs.state()
    return state


#: The saved `allowed_repeats` of a tracker told never to warn (inf): no epoch presents this many extra.
NEVER_WARN = 2**62


def _saved_allowance(tracker: TrackerFields) -> int:
    """`allowed_repeats` as the int a state holds: one set to a float (math.inf for "never warn"), a numpy or a
    0-d tensor value as the same rule on extra presentations (`int(inf)` made state_dict() and copy() raise).
    inf and nan are saved as NEVER_WARN, above any epoch's extra presentations (n was reached by a sampler
    drawing more than 2n indices an epoch: a resumed "never warn" then warned)."""
    value = tracker.allowed_repeats
    try:
        return max(0, int(value))
    except (OverflowError, ValueError):  # inf or nan: no count of extra presentations is above it
        return 0 if value < 0 else NEVER_WARN


def _signals_state(s: TrackedSignals, bad_index: torch.Tensor) -> dict[str, Any]:
    p = s.presentations
    running = s.bank[LOSS_KEY] if LOSS_KEY in s.bank else None
    return {
        "bank": {key: _buffers(s.bank[key]) for key in s.bank},
        "running_row": _copy(getattr(running, "epoch_row", None)),
        "given": _copy(s.given), "given_closed": _copy(s.labels.closed),
        "pred": _copy(s.pred), "non_finite_now": _copy(s.non_finite_now),
        "non_finite_train": _copy(s.non_finite_train), "label_conflicts": _copy(s.label_conflicts),
        "other_loss": _copy(s.other_loss),  # the open epoch's, warned at its end_epoch() (tracker31)
        "bad_index": _copy(bad_index), "eval_flags": [_copy(f) for f in s.evals.flags],
        "seen": torch.from_numpy(p.seen.copy()), "repeated": sorted(p.repeated_host), "first_repeat": p.first_repeat,
        "extra_host": p.extra_host,  # host presentations beyond each sample's first (allowed_repeats bounds them)
        "presented": _copy(p.presented), "first_seen": _copy(p.first_seen), "sequence": p.sequence,
        "batches": p.batches.state(),
        "epochs_presented": _copy(p.epochs),
    }


def _buffers(rec: Recorder) -> dict[str, Any]:
    """A recorder's buffers: a growing (epochs, N) one as its list of rows."""
    return {name: [_copy(r) for r in buf.rows] if isinstance(buf, GrowingRows) else _copy(buf)
            for name, buf in rec.buffers.items()}


def check(tracker: TrackerFields, state: Any) -> None:
    """A HarnessError, before anything changes, when `state` cannot resume this tracker: another
    tracker's, or one damaged or cut short (its every buffer is checked against this tracker's)."""
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
    same = (saved is None) == (own is None) and (own is None or (isinstance(saved, torch.Tensor)
                                                                 and saved.shape == own.shape
                                                                 and torch.equal(saved.cpu().long(), own)))
    if not same:
        raise HarnessError("load_state_dict(): the state was saved by a tracker with other constructor labels "
                           "(SampleTracker(labels=...)); pass the same labels, or none if it had none")
    try:
        _validate(tracker, state)
        _check_lost_labels(state)
    except HarnessError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RuntimeError) as exc:
        raise HarnessError(f"load_state_dict(): the state is incomplete or damaged ({type(exc).__name__}: {exc}); "
                           f"pass what state_dict() returned, unchanged") from exc


def _check_lost_labels(state: Mapping[str, Any]) -> None:
    """A state saved mid-epoch by a memprox before c94f7ce (one without `had_logits_closed`, which came after it),
    after update() gave samples labels other than their closed epochs': it kept the new labels in their place, so
    the closed epochs' labels of these samples are lost and nothing can go on from it (the epoch cannot close, and
    after discard_epoch() a rerun with the old labels was refused, one with the new ones mixed both silently)."""
    signals = state["signals"]  # had_logits_closed came after c94f7ce: such a state kept the old labels
    conflicts = signals.get("label_conflicts") if signals is not None else None
    if (signals is None or "given_closed" in signals or "had_logits_closed" in state or not state["pending"]
            or state.get("labels") is not None or conflicts is None):
        return
    lost = torch.nonzero((conflicts > 0) & (signals["epochs_presented"] > 0)).flatten()
    if len(lost):
        raise HarnessError(
            f"load_state_dict(): the state was saved mid-epoch after update() gave {len(lost)} sample(s) labels "
            f"other than their earlier epochs' (first: {lost[:10].tolist()}), by a memprox that kept the new "
            f"labels in place of the old: the labels their closed epochs were recorded against are lost, so the "
            f"epoch can neither close nor be rerun. Resume from a checkpoint saved before this epoch (at an "
            f"epoch's end), and give each sample one label")


def _damaged(what: str) -> HarnessError:
    return HarnessError(f"load_state_dict(): the state is incomplete or damaged: {what}; pass what state_dict() "
                        f"returned, unchanged")


def _validate(tracker: TrackerFields, state: Mapping[str, Any]) -> None:
    """The counters' types and ranges, then a dry run of `restore_signals` on the meta device (no
    memory), then the agreement of the rows with the epoch count."""
    epochs, classes, eval_at = state["epochs"], state["num_classes"], state["eval_at"]
    if not _is_int(epochs) or epochs < 0 or not (classes is None or (_is_int(classes) and classes >= 1)):
        raise _damaged(f"epochs = {epochs!r}, num_classes = {classes!r}")
    for name in ("pending", "all_batches_had_logits", "warned_repeats"):
        if not isinstance(state[name], bool):
            raise _damaged(f"{name} = {state[name]!r}")
    for name in ("had_logits_closed", "warned_other_loss"):  # absent: saved before it was kept
        if not isinstance(state.get(name, False), bool):
            raise _damaged(f"{name} = {state[name]!r}")
    allowed = state.get("allowed_repeats", 0)  # absent: saved before it was kept
    if not _is_int(allowed) or allowed < 0:
        raise _damaged(f"allowed_repeats = {allowed!r}")
    if not isinstance(state.get("no_suggestion"), (str, type(None))):
        raise _damaged(f"no_suggestion = {state['no_suggestion']!r}")
    if (not isinstance(eval_at, (list, tuple)) or not all(_is_int(e) and 1 <= e <= epochs for e in eval_at)
            or list(eval_at) != sorted(set(eval_at))):
        raise _damaged(f"eval_at = {eval_at!r} for {epochs} epochs")
    signals = state["signals"]
    if signals is None:
        if epochs or state["pending"] or eval_at:
            raise _damaged(f"no signals for {epochs} epochs")
        return
    if not isinstance(signals, Mapping):
        raise _damaged(f"signals is a {type(signals).__name__}")
    other = signals.get("other_loss")  # a count: a negative one warned "the losses= of -2 presentation(s)"
    if isinstance(other, torch.Tensor) and other.numel() == 1 and not other.is_floating_point() and int(other) < 0:
        raise _damaged(f"other_loss = {int(other)}")
    sel = tracker._selection
    meta = torch.device("meta")
    template = TrackedSignals(tracker.n, meta, sel.train_keys, tracker.running_sums, sel.keep_eval_history,
                              tracker._fixed_labels)
    restore_signals(template, torch.zeros((), dtype=torch.bool, device=meta), signals, classes, list(eval_at))
    if signals.get("class_probs") is not None:
        ClassProbSums.restored(signals["class_probs"], tracker.n, classes, meta)
    top = epochs + 1  # an epoch's rows are made at its first batch
    for key in template.bank:
        for name, buf in template.bank[key].buffers.items():
            if isinstance(buf, GrowingRows):
                low = epochs if key == LOSS_KEY else 0  # every batch records a loss
                high = epochs if key == template.evals.key else top
                if not low <= len(buf.rows) <= high:
                    raise _damaged(f"{len(buf.rows)} rows of {key} {name} for {epochs} epochs")
    if int(signals["epochs_presented"].max()) > epochs or int(signals["epochs_presented"].min()) < 0:
        raise _damaged(f"a sample presented in more than the {epochs} epochs")


def _extra_of_old_state(p: Presentations) -> int:
    """The open epoch's host presentations beyond each sample's first, for a state saved before they were kept:
    its batch sizes (`batches`, kept since hint30) count every presentation, less the device's (`sequence`) and
    the samples presented on the host; without them, one per repeated sample (each came at least twice): the count
    the old rule compared, so such a state warns at most as it did (gap31)."""
    if p.batches.known:
        return max(p.batches.total - p.sequence - int(p.seen.sum()), len(p.repeated_host))
    return len(p.repeated_host)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def restore_counters(tracker: TrackerFields, state: Mapping[str, Any]) -> None:
    """The plain values; the recorded signals follow on the device (`restore_signals`)."""
    tracker.epochs = int(state["epochs"])
    tracker.num_classes = state["num_classes"]
    tracker._pending = bool(state["pending"])
    tracker._all_batches_had_logits = bool(state["all_batches_had_logits"])
    # a state saved mid-epoch after a batch without logits: discarding that epoch gives the logit proxies back
    # (a state saved before this was kept: a discard keeps False as False)
    tracker._had_logits_closed = bool(state.get("had_logits_closed", tracker._all_batches_had_logits))
    # saved mid-epoch after a batch without logits by a memprox that did not keep it: the closed epochs may have
    # had logits in every batch; a discard of the open epoch says so (`warn_unknown_closed`)
    tracker._closed_logits_unknown = ("had_logits_closed" not in state and bool(state["pending"])
                                      and not tracker._all_batches_had_logits)
    tracker._warned_repeats = bool(state["warned_repeats"])
    tracker._warned_other_loss = bool(state.get("warned_other_loss", False))
    # the saved run's allowance covers the epoch the state holds open (`allowed_repeats`); this tracker's own stays
    # as set (a larger one covers it too); it replaces an earlier load's; a state saved before it was kept: none
    tracker._resumed_allowance = int(state.get("allowed_repeats", 0))
    tracker._eval_at = list(state["eval_at"])
    # recorded batches without sums and without a reason: saved before the suggested label existed
    signals, reason = state["signals"], state.get("no_suggestion")
    sums = isinstance(signals, Mapping) and signals.get("class_probs") is not None
    recorded = tracker.epochs > 0 or tracker._pending
    tracker._no_suggestion = OLD_STATE if reason is None and recorded and not sums else reason
    if reason == "" and recorded and not sums and tracker._suggest is not False:  # said, or it was silently absent
        tracker._no_suggestion = NO_SUMS_SAVED
    if tracker._suggest is False:  # never: sums the state has are not restored (`_ensure_device`)
        tracker._no_suggestion = ""


def restore_signals(s: TrackedSignals, bad_index: torch.Tensor, state: Mapping[str, Any], classes: int | None,
                    eval_at: list[int]) -> None:
    """Write a `_signals_state` into freshly made signals on their device; every saved tensor must
    have the shape and dtype of the buffer it goes to (`_validate` runs this on the meta device)."""
    dev = s.device

    def fits(target: torch.Tensor, value: Any, what: str) -> None:
        if not isinstance(value, torch.Tensor) or value.shape != target.shape or value.dtype != target.dtype:
            got = (f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor)
                   else type(value).__name__)
            raise HarnessError(f"load_state_dict(): the saved {what} is {got}, this tracker's is "
                               f"{tuple(target.shape)} {target.dtype}; the state does not fit this tracker")

    def put(target: torch.Tensor, value: Any, what: str) -> None:
        fits(target, value, what)
        target.copy_(value)

    def rows(value: Any, like: torch.Tensor, what: str) -> list[torch.Tensor]:
        if not isinstance(value, (list, tuple)):
            raise _damaged(f"{what} is a {type(value).__name__}, not a list of rows")
        for row in value:
            fits(like, row, what)
        return [r.to(dev, copy=True) for r in value]

    bank = state["bank"]
    if not isinstance(bank, Mapping) or not set(s.bank) <= set(bank) <= {*s.bank, s.evals.key}:
        got = sorted(bank) if isinstance(bank, Mapping) else type(bank).__name__
        raise _damaged(f"its recorders are {got}, this tracker's {sorted(s.bank)}")
    for key, buffers in bank.items():
        if key not in s.bank:  # the eval pass recorder, made at the first pass
            if classes is None:
                raise _damaged(f"{key} without num_classes")
            s.evals.recorder(int(classes))
        rec = s.bank[key]
        if not isinstance(buffers, Mapping) or set(buffers) != set(rec.buffers):
            raise _damaged(f"the buffers of {key} are not {sorted(rec.buffers)}")
        for name, value in buffers.items():
            buf = rec.buffers[name]
            if isinstance(buf, GrowingRows):
                like = torch.empty(buf.width, dtype=buf.dtype, device="meta")
                buf.rows = rows(value, like, f"{key} {name} row")
            else:
                put(buf, value, f"{key} {name}")
    running = getattr(s.bank[LOSS_KEY], "epoch_row", None) if LOSS_KEY in s.bank else None
    if state["label_conflicts"] is None and s.keep_labels:  # saved before update() labels were checked: none yet
        state = {**state, "label_conflicts": torch.zeros_like(s.label_conflicts, device="cpu")}
    for name, target in (("running_row", running), ("label_conflicts", s.label_conflicts)):
        if (target is None) != (state[name] is None):
            raise _damaged(f"{name} is {'missing' if target is not None else 'unexpected'}")
        if target is not None:
            put(target, state[name], name)
    for name in ("given", "pred", "non_finite_now", "non_finite_train"):
        put(getattr(s, name), state[name], name)
    if state.get("other_loss") is not None:  # absent: saved before it was kept, the open epoch's count lost
        put(s.other_loss, state["other_loss"], "other_loss")
    put(bad_index, state["bad_index"], "bad_index")
    if len(state["eval_flags"]) != len(eval_at):
        raise _damaged(f"{len(state['eval_flags'])} eval flag rows for {len(eval_at)} eval passes")
    s.evals.at = list(eval_at)
    s.evals.flags = rows(state["eval_flags"], torch.empty(s.n, dtype=torch.int32, device="meta"), "eval flags")
    p = s.presentations
    fits(torch.from_numpy(p.seen), state["seen"], "seen")
    repeated, sequence, first = state["repeated"], state["sequence"], state.get("first_repeat")  # absent: before it
    if not all(_is_int(i) and 0 <= i < s.n for i in repeated) or not _is_int(sequence) or sequence < 0 or not (
            first is None or _is_int(first) and 0 <= first <= s.n):
        raise _damaged(f"repeated = {list(repeated)[:10]}, sequence = {sequence!r}, first_repeat = {first!r}")
    extra = state.get("extra_host")  # absent: saved before it was kept (`_extra_of_old_state`)
    if extra is not None and (not _is_int(extra) or extra < len(repeated)):  # each repeated sample came again
        raise _damaged(f"extra_host = {extra!r} for {len(repeated)} repeated sample(s)")
    p.seen[:] = state["seen"].cpu().numpy()
    # an old state with repeats: where the first came is unknown, so not whole passes (0), not the next repeat
    p.repeated_host, p.first_repeat = set(repeated), 0 if first is None and repeated else first
    p.sequence = sequence
    p.batches.restore(state.get("batches"), sequence > 0 or bool(p.seen.any()))  # absent: saved before it was kept
    p.extra_host = _extra_of_old_state(p) if extra is None else extra
    for name, dtype in (("presented", torch.int32), ("first_seen", torch.int64)):
        value = state[name]
        if value is not None:
            fits(torch.empty(s.n + 1, dtype=dtype, device="meta"), value, name)
        setattr(p, name, None if value is None else value.to(dev, copy=True))
    put(p.epochs, state["epochs_presented"], "epochs_presented")
    closed = state.get("given_closed")  # absent: saved before it was kept
    if closed is not None:
        if s.labels.closed is None:
            raise _damaged("given_closed is unexpected")
        fits(s.labels.closed, closed, "given_closed")
    s.labels.restore_closed(closed, p.epochs)
