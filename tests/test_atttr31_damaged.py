"""Damaged or foreign values of the state's tracker31 fields (`allowed_repeats`, `warned_other_loss`, the signals'
`other_loss`) (atttr31): a refusal names the fix and changes nothing -- the tracker's state_dict() and allowance
are as before, and the right state loads after it; a state without them (an older memprox's) or with extra keys
loads. A negative other-loss count loaded and warned "the losses= of -2 presentation(s)"."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from harness import SampleTracker
from harness.errors import HarnessError

N = 5
FIX = "pass what state_dict() returned, unchanged"
OTHER = "SampleTracker: the losses= of 1 presentation(s) in epoch 1 d"  # the other-loss warning, as `_finish` cuts it
LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _saved() -> dict[str, Any]:
    """Mid-epoch 1, 2 samples of which 1 with a loss other than the cross-entropy of its logits."""
    t = SampleTracker(N, proxies=["csl", "aum"])
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(LOGITS, labels, reduction="none")
    t.update([0, 1], logits=LOGITS, labels=labels, losses=ce + torch.tensor([0.0, 0.5]))
    return t.state_dict()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _finish(t: SampleTracker) -> tuple[list[str], list[float]]:
    """Epoch 1's other samples, its end (the warnings it gives) and the csl it scores."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.update([2, 3, 4], logits=torch.zeros(3, 3), labels=torch.tensor([0, 1, 2]))
        t.end_epoch()
    return [str(w.message)[:len(OTHER)] for w in caught], [round(v, 5) for v in t.scores()["csl"].tolist()]


def _csl() -> list[float]:
    """Epoch 1's losses in float64: sample 0 and 1 their cross-entropy (+0.5 for 1), the others log(3)."""
    x = LOGITS.double()
    ce = (torch.logsumexp(x, 1) - x[[0, 1], [0, 1]]).tolist()
    return [round(v, 5) for v in (ce[0], ce[1] + 0.5, *[float(np.log(3.0))] * 3)]


BAD = [("allowed_repeats", v) for v in (-1, 1.0, True, "1", None, torch.tensor(1), np.int64(1), [1], float("inf"))]
BAD += [("warned_other_loss", v) for v in (1, None, "yes", torch.tensor(True), np.bool_(True))]
BAD += [("other_loss", v) for v in (torch.tensor(-2), torch.tensor([1]), torch.tensor(1.0), 3,
                                    torch.tensor(1, dtype=torch.int32))]


@pytest.mark.parametrize("key, bad", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_a_damaged_field_is_refused_naming_the_fix_and_changes_nothing(key: str, bad: object) -> None:
    saved = _saved()
    if key == "other_loss":
        damaged = {**saved, "signals": {**saved["signals"], key: bad}}
    else:
        damaged = {**saved, key: bad}
    fresh = SampleTracker(N, proxies=["csl", "aum"])
    fresh.allowed_repeats = 2
    before = fresh.state_dict()
    with pytest.raises(HarnessError, match=r"load_state_dict\(\): the (state is incomplete or damaged|saved other_loss)"
                       ) as refused:
        fresh.load_state_dict(damaged)
    assert FIX in str(refused.value) or "the state does not fit this tracker" in str(refused.value)
    assert _same(fresh.state_dict(), before) and fresh.allowed_repeats == 2 and fresh.epochs == 0
    fresh.load_state_dict(saved)  # the right state, after the refusal
    assert _finish(fresh) == _finish(_reload(saved))


def _reload(state: dict[str, Any]) -> SampleTracker:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    t = SampleTracker(N, proxies=["csl", "aum"])
    t.load_state_dict(torch.load(buf, weights_only=True))
    return t


def test_the_resumed_run_warns_and_scores_as_never_saved() -> None:
    """The reference of the other tests: the other-loss warning once, in epoch 1, csl with the +0.5 of sample 1."""
    said, csl = _finish(_reload(_saved()))
    assert said == [OTHER] and csl == _csl()


@pytest.mark.parametrize("change", ["no allowance", "no warned", "no other_loss", "extra keys", "huge allowance"])
def test_older_or_extended_states_load(change: str) -> None:
    """An older memprox's state (without a field) loads: without other_loss the open epoch's count is lost (its
    warning waits for a later epoch); extra keys are ignored; an allowance of 10**30 is a valid int."""
    saved = _saved()
    if change == "no allowance":
        saved.pop("allowed_repeats")
    elif change == "no warned":
        saved.pop("warned_other_loss")
    elif change == "no other_loss":
        saved["signals"] = {k: v for k, v in saved["signals"].items() if k != "other_loss"}
    elif change == "extra keys":
        saved = {**saved, "extra": torch.ones(2), "signals": {**saved["signals"], "extra": 1}}
    else:
        saved["allowed_repeats"] = 10**30
    t = _reload(saved)
    assert t.allowed_repeats == (10**30 if change == "huge allowance" else 0)
    said, csl = _finish(t)
    assert said == ([] if change == "no other_loss" else [OTHER])
    assert csl == _csl() and t.allowed_repeats == (10**30 if change == "huge allowance" else 0)


def test_a_load_to_a_device_that_fails_leaves_the_allowance_as_it_was() -> None:
    """load_state_dict(device=...) that cannot make the device puts the tracker back, both parts of its allowance
    included (the state's 3 does not stay behind), and the state loads after it."""
    t = SampleTracker(N, proxies=["csl", "aum"])
    t.allowed_repeats = 3
    t.update([0, 1], logits=LOGITS, labels=torch.tensor([0, 1]))
    saved = t.state_dict()
    fresh = SampleTracker(N, proxies=["csl", "aum"])
    fresh.allowed_repeats = 1
    before = fresh.state_dict()
    with pytest.raises((RuntimeError, HarnessError, AssertionError)):
        fresh.load_state_dict(saved, device="cuda:99" if not torch.cuda.is_available() else "cuda:999")
    assert fresh.allowed_repeats == 1 and _same(fresh.state_dict(), before)
    fresh.load_state_dict(saved)
    assert fresh.allowed_repeats == 3
