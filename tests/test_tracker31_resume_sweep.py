"""A tracker resumed from its state at every point of a 2-epoch run scores and warns as the uninterrupted run
(tracker31). A run is a list of events (update() of each batch, end_epoch(), eval_epoch(), discard_epoch()); the
state is saved at each point in turn -- before the first event, after the first batch, a middle one, the last batch
before end_epoch(), between end_epoch() and the eval pass, after the eval pass before the next epoch's first batch,
..., after the last eval pass -- round-tripped through `torch.save` / `torch.load(weights_only=True)`, loaded into a
fresh tracker ("state"; "device": `load_state_dict(device="cpu")`; "twice": loaded, saved and loaded again before any
use) or taken by `copy()` ("copy", "copy-of-loaded"), and the run finished there. Compared exactly with the
uninterrupted run: every warning (category and text, in order), the final `state_dict()`, `scores()` (default and
"all", or its refusal), `suspects(k=N)` with its suggested label, `epochs_presented()`.

Variants (`VARIANTS`): "plain" logits and labels; "rich" a sample repeated within each epoch (the repeat warning,
once), losses= with label smoothing in each epoch's first batch (the other-loss warning, once), a NaN logit in
epoch 2 (non-finite warnings, NaN scores); "retry" an attempt at epoch 2 discarded after a batch without logits;
"fixed" constructor labels; "losses" / "mixed" losses= alone in every / one batch; "running" running_sums;
"select" named proxies (the last eval pass alone kept); "nosuggest" suggest=False. With gather: two ranks as
threads (`FakeRanks`), each with its `DistributedSampler` shard of N = 7 samples (one rank padded with a repeat),
each rank resumed from its own state. Default run: rich and retry; the rest is slow."""

from __future__ import annotations

import io
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from harness import SampleTracker
from harness.errors import HarnessError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import FakeRanks, fake_ranks  # noqa: E402

N, C, D = 7, 3, 4
Y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
X = torch.randn(N, D, generator=torch.Generator().manual_seed(7))
Event = Callable[[SampleTracker], None]


@pytest.fixture
def ranks(monkeypatch: pytest.MonkeyPatch) -> FakeRanks:
    return fake_ranks(monkeypatch)


def _model(epoch: int) -> nn.Module:
    g = torch.Generator().manual_seed(100 + epoch)
    model = nn.Linear(D, C)
    with torch.no_grad():
        model.weight.copy_(torch.randn(C, D, generator=g))
        model.bias.copy_(torch.randn(C, generator=g))
    return model


#: what a variant's run does beyond "plain" (logits and labels in every batch, an eval pass after each epoch)
VARIANTS: dict[str, set[str]] = {
    "plain": set(),
    "rich": {"repeat", "smooth", "nan"},  # "nan": in a training batch of epoch 2 and in the eval pass after 1
    # epoch 2's second batch without logits, then the loop raises: discard_epoch() and the epoch rerun with them;
    # and the eval pass after epoch 1 run twice
    "retry": {"retry"},
    "fixed": {"fixed"},  # SampleTracker(labels=...), update() without labels=
    "losses": {"losses"},  # update(losses=...) alone: csl and the eval proxies only
    "mixed": {"mixed"},  # epoch 2's second batch with losses= alone: the logit proxies are left out, refused
    "running": {"running"},  # running_sums=True: no eval pass
    "select": {"select", "repeat", "nan"},  # proxies named: only their signals, the last eval pass alone
    "nosuggest": {"nosuggest", "smooth"},  # suggest=False
}


def _batches(rank: int | None, epoch: int, flags: set[str]) -> list[list[int]]:
    """One process: 3 batches over the N samples ("repeat": sample 3 again in epoch 1's last, 5 in epoch 2's).
    A rank: its shard in 2."""
    if rank is None:
        repeat = "repeat" in flags
        if epoch == 0:
            return [[0, 1, 2], [3, 4, 5], [6, 3] if repeat else [6]]
        return [[6, 5, 4], [3, 2], [1, 0, 5] if repeat else [1, 0]]
    sampler = DistributedSampler(range(N), num_replicas=2, rank=rank, shuffle=True, seed=3)
    sampler.set_epoch(epoch)
    shard = list(sampler)
    return [shard[:2], shard[2:]]


def _update(epoch: int, step: int, idx: list[int], flags: set[str], gather: bool, logits: bool = True) -> Event:
    g = torch.Generator().manual_seed(1000 * epoch + 10 * step + len(idx) + 7 * logits)
    z = torch.randn(len(idx), C, generator=g) * 2
    y = Y[idx]
    if "nan" in flags and epoch == 1 and 5 in idx:
        z[idx.index(5), 1] = float("nan")
    smoothed = "smooth" in flags and step == 0  # every rank alike: the gathered batch has losses= on all or none
    plain = nn.functional.cross_entropy(z, y, reduction="none")
    losses = nn.functional.cross_entropy(z, y, reduction="none", label_smoothing=0.2) if smoothed else None
    if not logits or "losses" in flags or "running" in flags and step == 1 or "mixed" in flags and epoch + step == 2:
        losses, z = plain, None  # running: one batch an epoch with losses alone, the others logits alone
    labels = None if "fixed" in flags or z is None else y

    def event(t: SampleTracker) -> None:
        t.update(torch.tensor(idx), losses=losses, logits=z, labels=labels, gather=gather)

    return event


def _events(rank: int | None, flags: set[str]) -> list[Event]:
    events: list[Event] = []
    for epoch in range(2):
        batches = _batches(rank, epoch, flags)
        if "retry" in flags and epoch == 1:
            events += [_update(epoch, 0, batches[0], flags, rank is not None),
                       _update(epoch, 1, batches[1], flags, rank is not None, logits=False),
                       SampleTracker.discard_epoch]
        for step, idx in enumerate(batches):
            events.append(_update(epoch, step, idx, flags, rank is not None))
        events.append(SampleTracker.end_epoch)
        if "running" in flags:
            continue
        if "retry" in flags and epoch == 0:  # a pass after epoch 1 run again: the second replaces the first
            events.append(lambda t, m=_model(5): t.eval_epoch(m, (X, Y)))
        x = X.clone()
        if "nan" in flags and epoch == 0:
            x[2, 0] = float("nan")  # sample 2 non-finite in the pass after epoch 1 (csl_eval NaN)
        events.append(lambda t, m=_model(epoch), x=x: t.eval_epoch(m, (x, Y)))
    return events


def _fresh(flags: set[str]) -> SampleTracker:
    proxies = ["csl", "aum", "final_loss", "in_confidence"] if "select" in flags else None
    return SampleTracker(N, labels=Y if "fixed" in flags else None, running_sums="running" in flags,
                         proxies=proxies, suggest=False if "nosuggest" in flags else None)


def _resumed(t: SampleTracker, how: str, flags: set[str]) -> SampleTracker:
    if how == "copy":
        return t.copy()
    if how == "twice":  # a state loaded and saved again before any use (`_saved`), then that state loaded
        return _resumed(_resumed(t, "state", flags), "state", flags)
    if how == "copy-of-loaded":
        return _resumed(t, "state", flags).copy()
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    fresh = _fresh(flags)
    fresh.load_state_dict(torch.load(buf, weights_only=True), device="cpu" if how == "device" else None)
    return fresh


def _result(call: Callable[[], Any]) -> Any:
    """A result, or the refusal's text (`scores("all")` of a run whose signals do not allow every proxy)."""
    try:
        return call()
    except HarnessError as e:
        return f"HarnessError: {e}"


def _run(events: list[Event], flags: set[str], at: int | None, how: str,
         caught: list[tuple[str, str]]) -> dict[str, Any]:
    """Every event, the tracker resumed (`how`) after event `at` (None: uninterrupted); what it reports, and the
    warnings, which the caller routes to `caught`."""
    t = _fresh(flags)
    if at == -1:  # before the first event: a state with nothing recorded
        t = _resumed(t, how, flags)
    for i, event in enumerate(events):
        event(t)
        if i == at:
            t = _resumed(t, how, flags)
    out = {"state": t.state_dict(), "scores": _result(t.scores), "all": _result(lambda: t.scores("all")),
           "suspects": _result(lambda: t.suspects(k=N)), "presented": t.epochs_presented()}
    out["warnings"] = list(caught)
    return out


@contextmanager
def _warnings_by(key: Callable[[], Any]) -> Iterator[dict[Any, list[tuple[str, str]]]]:
    """Every warning, to the list of `key()` of the thread that warned: `catch_warnings` swaps module-wide
    state, so one per rank thread would mix the ranks' warnings (or lose some)."""
    lists: dict[Any, list[tuple[str, str]]] = defaultdict(list)

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        lists[key()].append((category.__name__, str(message)))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield lists


def _same(a: Any, b: Any, where: str = "") -> list[str]:
    """Where `a` and `b` differ: tensors and arrays bitwise (NaN equal to NaN), frames exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items: {a!r} vs {b!r}"[:400]]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        ok = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.nan_to_num(7.5) if a.is_floating_point()
                                                                        else a, b.nan_to_num(7.5)
                                                                        if b.is_floating_point() else b)
        return [] if ok else [f"{where}: {a} vs {b}"]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [] if np.array_equal(a, b, equal_nan=a.dtype.kind == "f") else [f"{where}: {a} vs {b}"]
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as e:
            return [f"{where}: {e}"[:600]]
        return []
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} vs {b!r}"[:400]]


def _sweep(run: Callable[[int | None, str], Any], positions: int, hows: list[str]) -> list[str]:
    want = run(None, "")
    return [f"after event {at} ({how}): {d}" for how in hows for at in range(-1, positions)
            for d in _same(run(at, how), want)]


def _case(variant: str, hows: list[str], slow: bool = False) -> Any:
    return pytest.param(variant, hows, id=f"{variant}-{'+'.join(hows)}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(("variant", "hows"), [
    _case("rich", ["state"]), _case("retry", ["state"]), _case("rich", ["device", "copy"], slow=True),
    _case("retry", ["device", "copy"], slow=True),
    *(_case(v, ["state", "device", "copy"], slow=True)
      for v in ("plain", "fixed", "losses", "mixed", "running", "select", "nosuggest")),
    *(_case(v, ["twice", "copy-of-loaded"], slow=True) for v in ("rich", "retry", "select"))])
def test_one_process_resumed_anywhere_reports_as_uninterrupted(variant: str, hows: list[str]) -> None:
    flags = VARIANTS[variant]
    events = _events(None, flags)
    assert len(events) == {"retry": 14, "running": 8}.get(variant, 10)  # 3 updates, end, eval; twice

    def run(at: int | None, how: str) -> dict[str, Any]:
        with _warnings_by(lambda: 0) as caught:
            return _run(events, flags, at, how, caught[0])

    diffs = _sweep(run, len(events), hows)
    assert not diffs, "\n".join(diffs[:20])


@pytest.mark.parametrize(("variant", "hows"), [
    _case("rich", ["state"]), _case("rich", ["copy"], slow=True), _case("plain", ["state", "copy"], slow=True),
    _case("retry", ["state", "copy"], slow=True)])
def test_two_ranks_resumed_anywhere_report_as_uninterrupted(ranks: FakeRanks, variant: str, hows: list[str]) -> None:
    flags = VARIANTS[variant]
    events = {r: _events(r, flags) for r in (0, 1)}
    assert len(events[0]) == len(events[1]) == (12 if variant == "retry" else 8)  # 2 updates, end, eval; twice

    def run(at: int | None, how: str) -> list[Any]:
        with _warnings_by(lambda: ranks.local.rank) as caught:
            got = ranks.run(lambda rank: _run(events[rank], flags, at, how, caught[rank]))
        assert not any(isinstance(g, BaseException) for g in got), got
        return got

    diffs = _sweep(run, len(events[0]), hows)
    assert not diffs, "\n".join(diffs[:20])


def _smoothed_epoch_then(saved_how: str) -> list[str]:
    """Epoch 1 with a label-smoothed losses= batch, saved after it (mid-epoch) and resumed (`saved_how`: "state",
    or "old": the state as a memprox before tracker31 saved it); then epoch 1 closed and epoch 2 of the same kind."""
    z, y = torch.randn(N, C, generator=torch.Generator().manual_seed(5)), Y
    smoothed = nn.functional.cross_entropy(z, y, reduction="none", label_smoothing=0.2)
    with _warnings_by(lambda: 0) as caught:
        t = SampleTracker(N)
        t.update(torch.arange(N), losses=smoothed, logits=z, labels=y)
        saved = t.state_dict()
        if saved_how == "old":
            del saved["warned_other_loss"], saved["signals"]["other_loss"]
        t = SampleTracker(N)
        t.load_state_dict(saved)
        t.end_epoch()
        t.update(torch.arange(N), losses=smoothed, logits=z, labels=y)
        t.end_epoch()
    return [m.split(" differ")[0] for _, m in caught[0]]  # 6 of 7: one smoothed loss is within tolerance


def test_the_other_loss_warning_survives_a_resume_once_in_epoch_1() -> None:
    """Before tracker31 the open epoch's count of other losses and whether it was said were not in the state: the
    resumed run said it in epoch 2 instead of 1 (saved mid-epoch), or twice (saved after the epoch)."""
    assert _smoothed_epoch_then("state") == ["SampleTracker: the losses= of 6 presentation(s) in epoch 1"]


def test_a_state_without_the_other_loss_fields_still_loads() -> None:
    """Such a state lost the open epoch's count: the warning comes at the next epoch, as it did."""
    assert _smoothed_epoch_then("old") == ["SampleTracker: the losses= of 6 presentation(s) in epoch 2"]


@pytest.mark.parametrize(("key", "bad"), [("warned_other_loss", 1), ("other_loss", torch.zeros(1))])
def test_damaged_other_loss_fields_are_refused(key: str, bad: object) -> None:
    t = SampleTracker(N)
    t.update(torch.arange(N), logits=torch.zeros(N, C), labels=Y)
    saved = t.state_dict()
    (saved["signals"] if key == "other_loss" else saved)[key] = bad
    with pytest.raises(HarnessError, match=rf"incomplete or damaged|the saved {key} is"):
        SampleTracker(N).load_state_dict(saved)
