"""An own loop's tracker (`update(gather=True)`, no integration) resumed from a state saved at an epoch's last
batch and closed straight away (tracker31): `allowed_repeats`, which update(gather=True) raises to world size - 1
for a `DistributedSampler`'s padding, was not in the state, so the fresh tracker had 0 and its `end_epoch()` warned
the padding as repeated presentations, which the uninterrupted run allows. Two ranks as threads (`FakeRanks`)."""

from __future__ import annotations

import sys
import threading
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler

from harness import SampleTracker
from harness.errors import HarnessError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import FakeRanks, fake_ranks  # noqa: E402

N = 5  # odd: a DistributedSampler over 2 ranks pads rank 1 with sample 0


@pytest.fixture
def ranks(monkeypatch: pytest.MonkeyPatch) -> FakeRanks:
    return fake_ranks(monkeypatch)


def _shard(rank: int) -> torch.Tensor:
    """The sampler's own shard: rank 0 [0, 2, 4], rank 1 [1, 3, 0] (0: the padding)."""
    return torch.tensor(list(DistributedSampler(range(N), num_replicas=2, rank=rank, shuffle=False)))


def _run(ranks: FakeRanks, resume: str | None) -> list[Any]:
    """One epoch of one batch a rank, closed by the tracker that recorded it or, `resume`d, by a fresh one that
    loaded its state ("old": the state as a memprox before tracker31 saved it, without `allowed_repeats`)."""

    def step(rank: int) -> tuple[list[str], int, list[float]]:
        tracker = SampleTracker(N, proxies=["csl"])
        idx = _shard(rank)
        tracker.update(idx, losses=idx.float() + 1, gather=True)
        if resume is not None:
            saved = tracker.state_dict()
            if resume == "old":
                del saved["allowed_repeats"]
            tracker = SampleTracker(N, proxies=["csl"])
            tracker.load_state_dict(saved)
        tracker.end_epoch()
        return caught[threading.get_ident()], tracker.allowed_repeats, tracker.scores()["csl"].tolist()

    caught: dict[int, list[str]] = defaultdict(list)  # per rank thread: catch_warnings in each would mix them

    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        caught[threading.get_ident()].append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        return ranks.run(step)


def test_the_sampler_shards_pad_with_sample_0() -> None:
    assert _shard(0).tolist() == [0, 2, 4] and _shard(1).tolist() == [1, 3, 0]


@pytest.mark.parametrize("resume", [None, "state"])
def test_a_padded_epoch_closed_right_after_the_resume_is_not_warned(ranks: FakeRanks, resume: str | None) -> None:
    """Before the fix the resumed tracker warned "1 sample(s) were presented more than once in epoch 1" on
    both ranks, and had allowed_repeats 0."""
    out = _run(ranks, resume)
    assert out[0] == out[1] == ([], 1, [1.0, 2.0, 3.0, 4.0, 5.0]), out


def test_a_state_saved_without_allowed_repeats_still_loads(ranks: FakeRanks) -> None:
    """A state of a memprox before tracker31 loads and scores as before; it does not know the padding, so
    the epoch closed without an update() warns it, as it did (a later update(gather=True) allows it)."""
    out = _run(ranks, "old")
    for messages, allowed, csl in out:
        assert allowed == 0 and csl == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert len(messages) == 1 and "1 sample(s) were presented more than once in epoch 1" in messages[0]


def test_the_allowance_is_kept_as_max_of_the_states_and_the_users() -> None:
    """A larger allowance the user set before load_state_dict() stays (update()'s rule); a smaller is raised."""
    t = SampleTracker(N, proxies=["csl"])
    t.allowed_repeats = 3
    t.update([0, 1], losses=torch.ones(2))
    saved = t.state_dict()
    assert saved["allowed_repeats"] == 3
    for before, after in ((0, 3), (7, 7)):
        fresh = SampleTracker(N, proxies=["csl"])
        fresh.allowed_repeats = before
        fresh.load_state_dict(saved)
        assert fresh.allowed_repeats == after
        assert fresh.state_dict()["allowed_repeats"] == after


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1"])
def test_a_damaged_allowance_is_refused_and_changes_nothing(bad: object) -> None:
    t = SampleTracker(N, proxies=["csl"])
    t.update([0, 1], losses=torch.ones(2))
    saved = {**t.state_dict(), "allowed_repeats": bad}
    fresh = SampleTracker(N, proxies=["csl"])
    with pytest.raises(HarnessError, match=r"incomplete or damaged: allowed_repeats = "):
        fresh.load_state_dict(saved)
    assert fresh.allowed_repeats == 0 and fresh.epochs == 0
