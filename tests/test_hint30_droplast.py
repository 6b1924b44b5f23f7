"""hint30: the end_epoch() hint of the repeated-presentations warning (34f3bea, 26a72ec: only for whole passes)
with a shuffling DataLoader and drop_last=True. Each epoch then presents N - r samples (r = N mod batch), so a
loop that calls end_epoch() once after 2 or 3 epochs repeats samples from about N - r on, not from N on, and some
samples come once (dropped in the other epochs): the whole-passes test failed, and such a loop was warned but not
told to call end_epoch() after each epoch. Samplers with replacement must still get no hint."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SubsetRandomSampler, TensorDataset, WeightedRandomSampler

from harness import SampleTracker
from harness.errors import HarnessError

HINT = "in whole passes over them"
EACH = "call end_epoch() after each epoch"


def _epoch(n: int, batch: int, sampler: Any = None, seed: int = 0, drop_last: bool = True) -> list[torch.Tensor]:
    """One epoch's index batches of a DataLoader over range(n), shuffled unless a sampler is given."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=batch, drop_last=drop_last,
                        shuffle=sampler is None, sampler=sampler, generator=g if sampler is None else None)
    return [idx for (idx,) in loader]


def _warning(n: int, batches: list[torch.Tensor], resume_at: int | None = None) -> str:
    """The repeated-presentations warning of one tracker epoch presenting `batches`, closed by one end_epoch()
    ("" when none); `resume_at`: a step checkpoint after that many batches, resumed in a new tracker."""
    tracker = SampleTracker(n, proxies=["csl"])
    for i, idx in enumerate(batches):
        if i == resume_at:
            state = tracker.state_dict()
            tracker = SampleTracker(n, proxies=["csl"])
            tracker.load_state_dict(state)
        tracker.update(idx, losses=torch.ones(len(idx), device=idx.device))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.end_epoch()
    said = [str(w.message) for w in caught if "presented more than once" in str(w.message)]
    return said[0] if said else ""


@pytest.mark.parametrize("epochs", [2, 3])
@pytest.mark.parametrize(("n", "batch"), [(10, 4), (12, 5), (100, 8), (103, 16)])
def test_shuffled_drop_last_epochs_closed_once_are_told(n: int, batch: int, epochs: int) -> None:
    """Every seed: a missed end_epoch() over a shuffled loader with drop_last is told to call it."""
    assert n % batch  # a remainder is dropped every epoch
    for seed in range(8):
        batches = [b for e in range(epochs) for b in _epoch(n, batch, seed=100 * seed + e)]
        text = _warning(n, batches)
        assert "sample(s) were presented more than once in epoch 1" in text, (seed, text)
        assert HINT in text and EACH in text, (seed, text)
        # some came once (dropped by the other passes): not "every sample", unless the passes dropped the same
        dropped = "Nearly every sample this epoch presented came again" in text
        assert dropped != ("Every sample this epoch presented came again" in text)
        assert dropped == ("drop_last=True" in text)


def test_the_hint_survives_a_mid_epoch_checkpoint() -> None:
    batches = [b for e in range(2) for b in _epoch(10, 4, seed=e)]
    whole = _warning(10, batches)
    assert HINT in whole
    for at in range(1, len(batches)):
        assert _warning(10, batches, resume_at=at) == whole


def test_without_drop_last_the_hint_is_as_before() -> None:
    batches = [b for e in range(2) for b in _epoch(10, 4, seed=e, drop_last=False)]
    text = _warning(10, batches)
    assert "Every sample this epoch presented came again, in whole passes over them" in text and EACH in text


def _no_hint(n: int, batches: list[torch.Tensor]) -> None:
    text = _warning(n, batches)
    assert "presented more than once" in text
    assert HINT not in text and "end_epoch()" not in text, text


@pytest.mark.parametrize("batch", [4, 5, 8, 12])
def test_samplers_with_replacement_get_no_hint(batch: int) -> None:
    """drop_last does not make a sampler with replacement look like whole passes, for 40 seeds each."""
    n = 24
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        weighted = WeightedRandomSampler(torch.ones(n), num_samples=5 * n, replacement=True, generator=g)
        _no_hint(n, _epoch(n, batch, weighted))
        doubled = RandomSampler(range(n), replacement=True, num_samples=2 * n, generator=g)
        _no_hint(n, _epoch(n, batch, doubled))
        halves = [b for _ in range(3) for b in _epoch(n, batch, RandomSampler(range(n), replacement=True,
                                                                             num_samples=n // 2, generator=g))]
        _no_hint(n, halves)


def test_random_subsets_without_replacement_get_no_hint() -> None:
    """Three epochs of a random half each (RandomSampler(num_samples=n // 2)), closed once: not whole passes."""
    n = 40
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(range(n), num_samples=n // 2, generator=g)
        _no_hint(n, [b for _ in range(3) for b in _epoch(n, 8, sampler)])


def test_whole_passes_over_a_subset_or_twice_the_data_are_told() -> None:
    """Without replacement, RandomSampler(num_samples=2n) and a SubsetRandomSampler's epochs closed once are
    whole passes over what they present (the hint names the first)."""
    g = torch.Generator().manual_seed(5)
    n = 20
    text = _warning(n, _epoch(n, 6, RandomSampler(range(n), num_samples=2 * n, generator=g)))
    assert HINT in text and "RandomSampler(num_samples=...)" in text
    subset = SubsetRandomSampler(list(range(0, n, 2)), generator=g)  # 10 of 20, 4 a batch: 2 dropped an epoch
    text = _warning(n, [b for _ in range(2) for b in _epoch(n, 4, subset)])
    assert HINT in text and EACH in text


def _state_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape):
            return False
        return bool(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)) if a.is_floating_point() \
            else torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_state_equal, a, b))
    return type(a) is type(b) and a == b


def test_a_refused_update_changes_no_batch_count() -> None:
    tracker = SampleTracker(10, proxies=["csl"])
    tracker.update(torch.arange(4), losses=torch.ones(4))
    before = tracker.state_dict()
    assert before["signals"]["batches"] == [4, 4, 4]
    for bad in (dict(losses=torch.ones(3)), dict(losses=torch.ones(8).reshape(4, 2))):
        with pytest.raises(HarnessError):
            tracker.update(torch.arange(4, 8), **bad)
    with pytest.raises(HarnessError):
        tracker.update(torch.tensor([4, 5, 6, 10]), losses=torch.ones(4))  # out of range
    assert _state_equal(tracker.state_dict(), before)
    tracker.update(torch.arange(4, 6), losses=torch.ones(2))
    assert tracker.state_dict()["signals"]["batches"] == [2, 4, 6]


def test_batch_counts_are_per_epoch_and_forgotten_by_discard() -> None:
    tracker = SampleTracker(10, proxies=["csl"])
    tracker.update(torch.arange(3), losses=torch.ones(3))
    tracker.end_epoch()
    assert tracker.state_dict()["signals"]["batches"] == [0, 0, 0]
    tracker.update(torch.arange(5), losses=torch.ones(5))
    tracker.discard_epoch()
    assert tracker.state_dict()["signals"]["batches"] == [0, 0, 0]


def test_an_old_state_loads_as_before() -> None:
    """Saved before the batch sizes were kept: mid-epoch they are unknown (no drop_last hint that epoch, the
    hint as before); at an epoch's end nothing is lost. A damaged value is refused, changing nothing."""
    batches = [b for e in range(2) for b in _epoch(10, 4, seed=e)]
    tracker = SampleTracker(10, proxies=["csl"])
    for idx in batches[:3]:
        tracker.update(idx, losses=torch.ones(len(idx)))
    state = tracker.state_dict()
    old = {**state, "signals": {k: v for k, v in state["signals"].items() if k != "batches"}}
    resumed = SampleTracker(10, proxies=["csl"])
    resumed.load_state_dict(old)
    for idx in batches[3:]:
        resumed.update(idx, losses=torch.ones(len(idx)))
    assert resumed.state_dict()["signals"]["batches"] is None  # unknown until the epoch closes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.end_epoch()
    (text,) = [str(w.message) for w in caught if "presented more than once" in str(w.message)]
    assert HINT not in text  # as before this fix: the batches before the checkpoint are unknown
    assert resumed.state_dict()["signals"]["batches"] == [0, 0, 0]
    fresh = SampleTracker(10, proxies=["csl"])
    fresh.update(torch.arange(4), losses=torch.ones(4))
    fresh.end_epoch()
    state = fresh.state_dict()
    old = {**state, "signals": {k: v for k, v in state["signals"].items() if k != "batches"}}
    resumed = SampleTracker(10, proxies=["csl"])
    resumed.load_state_dict(old)
    resumed.update(torch.arange(4), losses=torch.ones(4))
    assert resumed.state_dict()["signals"]["batches"] == [4, 4, 4]  # the open epoch's, all of them
    for damaged in ([4, 4], [5, 4, 9], [4, 4, -4], [4, 4, 3], "4", [True, 4, 4], [0, 0, 4]):
        bad = {**state, "signals": {**state["signals"], "batches": damaged}}
        target = SampleTracker(10, proxies=["csl"])
        with pytest.raises(HarnessError, match="batches"):
            target.load_state_dict(bad)
        target.load_state_dict(state)  # still a new tracker: the refused load changed nothing
        assert _state_equal(target.state_dict(), state)


def test_the_device_rule_matches_the_host_rule() -> None:
    """Indices on a GPU (`first_seen`) decide as host indices do, driven on the CPU through `slots`."""
    from harness.tracker.signals import Presentations

    for seed in range(10):
        for epochs, (n, batch) in ((2, (10, 4)), (3, (23, 5))):
            batches = [b for e in range(epochs) for b in _epoch(n, batch, seed=10 * seed + e)]
            g = torch.Generator().manual_seed(seed)
            weighted = _epoch(n, batch, WeightedRandomSampler(torch.ones(n), 3 * n, generator=g))
            for order, whole in ((batches, True), (weighted, False)):
                device, host = Presentations(n, torch.device("cpu")), Presentations(n, torch.device("cpu"))
                for idx in order:
                    for p in (device, host):
                        p.batches.add(len(idx))
                    device.slots(idx)
                    host.slots(idx, idx.numpy())
                count = int(device.repeated())
                assert count == int(host.repeated())
                assert device.whole_passes(count) is whole and host.whole_passes(count) is whole, (seed, epochs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="indices on a GPU take the device path")
def test_cuda_indices_get_the_hosts_hint() -> None:
    """The whole tracker with indices on a GPU (`first_seen`, batches merged by the log) says what it says
    for the same batches on the host."""
    for seed in range(4):
        batches = [b for e in range(2) for b in _epoch(10, 4, seed=10 * seed + e)]
        g = torch.Generator().manual_seed(seed)
        weighted = _epoch(10, 4, WeightedRandomSampler(torch.ones(10), 30, generator=g))
        for order in (batches, weighted):
            assert _warning(10, [b.cuda() for b in order]) == _warning(10, order)
        assert HINT in _warning(10, [b.cuda() for b in batches])
