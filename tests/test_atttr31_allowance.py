"""A resumed tracker's `allowed_repeats` (atttr31). Since tracker31 the state keeps the allowance, and loading took
max(saved, own) for the rest of the run: a run resumed on fewer ranks (a world-2 state on one process) never warned
the real repeats of its own sampler (1 sample an epoch) that a run never saved warns; a second load kept the first
state's allowance; and `allowed_repeats = math.inf` ("never warn") made state_dict() and copy() raise OverflowError.
The saved allowance now covers the epoch the state holds open (its batches came from the saved run's world), up to
the next epoch's first update(). The integrations' `DistributedRecorder` goes through the same rule, old checkpoints
(9b2283e: a tracker state without the allowance, the recorder's own beside it) included."""

from __future__ import annotations

import io
import math
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler

from harness import SampleTracker
from harness.integrations._common import DistributedRecorder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import fake_ranks  # noqa: E402

N = 5  # odd: a DistributedSampler over 2 ranks pads rank 1 with sample 0
REPEAT = "1 sample(s) were presented more than once in epoch 2"


def _shard(rank: int, repeat: bool = False) -> list[int]:
    """The sampler's shard, rank 0 [0, 2, 4], rank 1 [1, 3, 0] (0: the padding); `repeat`: rank 0's sampler
    repeats sample 2 too, a real repeat (not padding), which the gathered epoch warns: 2 repeats, 1 allowed."""
    idx = list(DistributedSampler(range(N), num_replicas=2, rank=rank, shuffle=False))
    return idx + [2] if repeat and rank == 0 else idx


_LOCAL = threading.local()


@pytest.fixture(autouse=True)
def _warnings_per_thread() -> Iterator[None]:
    """Each thread's warnings to its own list: `catch_warnings` swaps module-wide state, so one per rank thread
    mixes the ranks' warnings (a rank's warning went to the other's list now and then)."""
    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        _LOCAL.said.append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _said(call: Callable[[], Any]) -> list[str]:
    """The repeat warnings `call` gave in this thread."""
    _LOCAL.said = []
    call()
    return [m for m in _LOCAL.said if "presented more than once" in m]


def _reload(state: dict[str, Any], tracker: SampleTracker | None = None) -> SampleTracker:
    """The state through torch.save / torch.load(weights_only=True), into a fresh tracker."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    fresh = tracker or SampleTracker(N, proxies=["csl"])
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


def _one_process_epoch_2(t: SampleTracker) -> list[str]:
    """Epoch 2 on one process (update(gather=True) without a process group): every sample, sample 3 twice."""
    def epoch() -> None:
        t.update([0, 1, 2, 3, 4, 3], losses=torch.ones(6), gather=True)
        t.end_epoch()
    return _said(epoch)


@pytest.mark.parametrize("closed", [False, True])
def test_a_two_rank_state_resumed_on_one_process_warns_its_own_repeats(monkeypatch: pytest.MonkeyPatch,
                                                                        closed: bool) -> None:
    """Saved by 2 ranks at epoch 1's last batch (`closed`: after its end_epoch()), resumed on one process: epoch
    1's padding stays allowed, and epoch 2's real repeat is warned as on a run never saved (before: allowance 1 for
    good, no warning)."""
    ranks = fake_ranks(monkeypatch)

    def saved_by(rank: int) -> dict[str, Any]:
        t = SampleTracker(N, proxies=["csl"])
        idx = torch.tensor(_shard(rank))
        t.update(idx, losses=idx.float() + 1, gather=True)
        if closed:
            t.end_epoch()
        return t.state_dict()

    state = ranks.run(saved_by)[0]
    monkeypatch.undo()
    assert state["allowed_repeats"] == 1
    resumed = _reload(state)
    first = [] if closed else _said(resumed.end_epoch)
    never_saved = SampleTracker(N, proxies=["csl"])
    never_saved.update([0, 1, 2, 3, 4], losses=torch.ones(5), gather=True)
    never_saved.end_epoch()
    assert first == [] and _one_process_epoch_2(never_saved) == _one_process_epoch_2(resumed) != []
    assert resumed.allowed_repeats == never_saved.allowed_repeats == 0
    assert resumed.scores()["csl"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("at", range(5))
def test_two_ranks_resumed_anywhere_warn_a_real_repeat_as_never_saved(monkeypatch: pytest.MonkeyPatch,
                                                                       at: int) -> None:
    """Two epochs on 2 ranks, epoch 2 with a real repeat; resumed (torch.save, weights_only) before event `at`
    of [update, end_epoch, update, end_epoch]: both ranks say what the run never saved says, once."""
    ranks = fake_ranks(monkeypatch)

    def run(rank: int, at: int | None) -> tuple[list[str], int]:
        t = SampleTracker(N, proxies=["csl"])
        said: list[str] = []
        for i, epoch in enumerate((1, 1, 2, 2)):
            if i == at:
                t = _reload(t.state_dict())
            if i % 2 == 0:
                idx = torch.tensor(_shard(rank, repeat=epoch == 2))
                said += _said(lambda t=t, idx=idx, e=epoch: t.update(idx, losses=idx.float() + e, gather=True))
            else:
                said += _said(t.end_epoch)
        return said, t.allowed_repeats

    never = ranks.run(lambda rank: run(rank, None))
    resumed = ranks.run(lambda rank: run(rank, at))
    assert resumed == never and len(never[0][0]) == 1 and REPEAT.replace("1 sample", "2 sample") in never[0][0][0]


def test_a_second_load_replaces_the_first_loads_allowance() -> None:
    """A state with allowance 3, then the right one with 0 (both mid-epoch 1): as if only the second was loaded
    (before: 3 stayed, and a repeat went unsaid)."""
    a, b = SampleTracker(N, proxies=["csl"]), SampleTracker(N, proxies=["csl"])
    a.allowed_repeats = 3
    for t in (a, b):
        t.update([0, 1], losses=torch.ones(2))
    twice = _reload(b.state_dict(), _reload(a.state_dict()))
    once = _reload(b.state_dict())
    for t in (twice, once):
        t.update([2, 3, 4, 0], losses=torch.ones(4))
    assert twice.allowed_repeats == once.allowed_repeats == 0
    assert _said(twice.end_epoch) == _said(once.end_epoch) != []


def test_the_users_own_allowance_stays_past_the_resumed_epoch() -> None:
    """The allowance set on the resuming tracker (before or after the load) is the run's own: it stays; the
    state's covers its open epoch only (the larger of the two counts there), and the copy of a resumed tracker
    holds both parts as it does."""
    t = SampleTracker(N, proxies=["csl"])
    t.allowed_repeats = 3
    t.update([0, 1], losses=torch.ones(2))
    state = t.state_dict()
    own_after, plain = _reload(state), _reload(state)
    own_after.allowed_repeats = 2
    twin = plain.copy()
    assert (own_after.allowed_repeats, plain.allowed_repeats, twin.allowed_repeats) == (3, 3, 3)  # the larger
    for x in (own_after, plain, twin):
        x.update([2, 3, 4, 0, 1], losses=torch.ones(5))
        assert _said(x.end_epoch) == []
        x.update([0, 1, 2, 3, 4, 0, 1], losses=torch.ones(7))  # epoch 2: 2 repeats
    assert (own_after.allowed_repeats, plain.allowed_repeats, twin.allowed_repeats) == (2, 0, 0)
    assert _said(own_after.end_epoch) == [] and len(_said(plain.end_epoch)) == len(_said(twin.end_epoch)) == 1


@pytest.mark.parametrize("value, saved", [(math.inf, 2**62), (math.nan, 2**62), (2.5, 2), (-math.inf, 0)])
def test_a_float_allowance_saves_and_copies(value: float, saved: int) -> None:
    """math.inf ("never warn") made state_dict() and copy() raise OverflowError; saved as 2**62, above any
    epoch's extra presentations (n was not: a sampler drawing more than 2n an epoch exceeds it)."""
    t = SampleTracker(N, proxies=["csl"])
    t.allowed_repeats = value
    t.update([0, 1, 2, 0, 1], losses=torch.ones(5))  # 2 repeats
    assert t.copy().state_dict()["allowed_repeats"] == saved
    resumed = _reload(t.state_dict())
    assert resumed.allowed_repeats == saved
    assert len(_said(resumed.end_epoch)) == len(_said(t.end_epoch)) == (1 if saved < 2 else 0)


def _two_rank_checkpoint(monkeypatch: pytest.MonkeyPatch, old: bool, padding_batch: int = 1) -> dict[str, Any]:
    """The integrations' checkpoint (`DistributedRecorder.state`) of 2 ranks at epoch 1's last batch; `old`: as
    a memprox at 9b2283e saved it, the tracker state without the allowance and the other-loss fields."""
    ranks = fake_ranks(monkeypatch)

    def saved_by(rank: int) -> dict[str, Any]:
        rec = DistributedRecorder(SampleTracker(N, proxies=["csl"]))
        rec.padding_batch = padding_batch
        rec.update(torch.tensor(_shard(rank)), losses=torch.ones(3))
        return rec.state()

    state = ranks.run(saved_by)[0]
    monkeypatch.undo()
    if old:
        tracker = {k: v for k, v in state["tracker"].items() if k not in ("allowed_repeats", "warned_other_loss")}
        tracker["signals"] = {k: v for k, v in tracker["signals"].items() if k != "other_loss"}
        state = {**state, "tracker": tracker}
    return state


@pytest.mark.parametrize("old", [False, True])
def test_an_integration_checkpoint_of_two_ranks_resumed_on_one_process(monkeypatch: pytest.MonkeyPatch,
                                                                       old: bool) -> None:
    """The epoch the checkpoint holds open closes at the resume without a warning; epoch 2, on one process,
    warns its real repeat (before: the checkpoint's allowance 1 was set for good, nothing said)."""
    state = _two_rank_checkpoint(monkeypatch, old)
    assert state["allowed_repeats"] == 1
    rec = DistributedRecorder(SampleTracker(N, proxies=["csl"]))
    rec.resume(state, None, "CSLCallback", 1)
    assert rec.tracker.allowed_repeats == 1
    assert _said(lambda: rec.close_epoch_before(1)) == [] and rec.tracker.epochs == 1

    def epoch_2() -> None:
        rec.update(torch.tensor([0, 1, 2, 3, 4, 3]), losses=torch.ones(6))
        rec.end_epoch()
    said = _said(epoch_2)
    assert len(said) == 1 and REPEAT in said[0] and rec.tracker.allowed_repeats == 0


@pytest.mark.parametrize("old", [False, True])
def test_an_integration_checkpoint_resumed_on_as_many_ranks_allows_its_padding(monkeypatch: pytest.MonkeyPatch,
                                                                               old: bool) -> None:
    """Accelerate's padding (2 ranks x 2 a batch - 1 = 3) is allowed at the resume and after it, and the tracker's
    own field and the checkpoint's agree: nothing counted twice, nothing warned."""
    state = _two_rank_checkpoint(monkeypatch, old, padding_batch=2)
    assert state["allowed_repeats"] == 3 and (old or state["tracker"]["allowed_repeats"] == 3)
    ranks = fake_ranks(monkeypatch)

    def resumed(rank: int) -> tuple[list[str], int, int]:
        rec = DistributedRecorder(SampleTracker(N, proxies=["csl"]))
        rec.padding_batch = 2
        rec.resume(state, None, "CSLTrainerCallback", 1)
        said = _said(lambda: rec.close_epoch_before(1))
        idx = torch.tensor([[0, 2, 4, 0], [1, 3, 1, 2]][rank])  # 3 repeats: the padding allowed
        said += _said(lambda: (rec.update(idx, losses=torch.ones(4)), rec.end_epoch()))
        return said, rec.tracker.allowed_repeats, rec.tracker.state_dict()["allowed_repeats"]

    assert ranks.run(resumed) == [([], 3, 3)] * 2



def test_a_larger_worlds_allowance_resumed_on_two_ranks_covers_its_open_epoch_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A state with allowance 3 (a 4-rank run's padding) resumed on 2 ranks mid-epoch 1; epoch 2's padding (1) with
    rank 0's real repeats of samples 2 and 4 (3 in all) is warned on both ranks, as on 2 ranks never saved (before:
    3 allowed for good, nothing said)."""
    ranks = fake_ranks(monkeypatch)

    def run(rank: int, resume: bool) -> tuple[list[str], int]:
        t = SampleTracker(N, proxies=["csl"])
        idx = torch.tensor(_shard(rank))
        t.update(idx, losses=idx.float() + 1, gather=True)
        if resume:
            t = _reload({**t.state_dict(), "allowed_repeats": 3})
        said = _said(t.end_epoch)
        idx2 = torch.tensor(_shard(rank) + ([2, 4] if rank == 0 else []))
        said += _said(lambda: (t.update(idx2, losses=torch.ones(len(idx2)), gather=True), t.end_epoch()))
        return said, t.allowed_repeats

    never = ranks.run(lambda rank: run(rank, False))
    resumed = ranks.run(lambda rank: run(rank, True))
    assert resumed == never and [len(n[0]) for n in never] == [1, 1] and never[0][1] == 1
    assert "3 sample(s) were presented more than once in epoch 2" in never[0][0][0]
