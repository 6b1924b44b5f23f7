"""The repeat warning counts extra presentations, not samples (gap31). `end_epoch()` compared the number of SAMPLES
presented more than once with `allowed_repeats` (world size - 1 after `update(gather=True)`, a `DistributedSampler`'s
padding): a sample shown 3 times under an allowance of 1 stayed silent, and so did a real repeat of exactly the
sample the sampler pads with. Padding adds at most world size - 1 EXTRA PRESENTATIONS (presentations minus distinct
samples presented), which is what the warning now compares. Held here, on the host and the device index paths
(the device one taken on the CPU, `Inputs.batch_indices` patched as in tests/test_tracker29.py): the exhaustive
sampler padding at world sizes 2, 3, 4 and N = 1..12 through `update(gather=True)` (ranks as threads), each epoch
silent and the same epoch with one presentation more warned; random epochs against an independent count at the
allowance's boundary; states saved after every batch of a repeating epoch (old states without the new count too);
and one device-to-host read per `end_epoch()`, none per `update()`."""

from __future__ import annotations

import sys
import threading
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from harness import SampleTracker
from harness.errors import HarnessError
from harness.tracker.inputs import Inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import fake_ranks  # noqa: E402

REPEAT = "presented more than once"
PATHS = ["host", "device"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Host indices (the numpy path), or the same indices taken as a GPU's are (`first_seen`, `presented`)."""
    if request.param == "device":
        def device_path(self: Inputs, indices: Any, where: str = "update()") -> tuple[None, torch.Tensor]:
            return None, torch.as_tensor(indices).to(self.device, torch.int64)

        monkeypatch.setattr(Inputs, "batch_indices", device_path)
    return str(request.param)


def _expected(order: list[int], epoch: int, extra: int, allowed: int) -> tuple[str, str]:
    """The warning's opening and ending for an epoch presenting `order`, computed from the order alone."""
    twice = sorted(i for i, c in Counter(order).items() if c > 1)
    return (f"SampleTracker: {len(twice)} sample(s) were {REPEAT} in epoch {epoch} (first: {twice[:10]});",
            f"({extra} presentation(s) beyond each sample's first this epoch, above tracker.allowed_repeats = "
            f"{allowed})")


def _repeats(caught: list[str]) -> list[str]:
    return [m for m in caught if REPEAT in m]


# -- a DistributedSampler's padding, exhaustively, through update(gather=True) -----------------------------------
def _shards(n: int, world: int, epoch: int) -> list[list[int]]:
    shards = []
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=n)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    return shards


def _ddp_run(monkeypatch: pytest.MonkeyPatch, n: int, world: int, batch: int) -> list[Any]:
    """Two epochs of the sampler's shards, `batch` a rank and step, gathered; in epoch 2 rank 0 presents its
    first sample (the one the padding repeats, when it pads) `world - pad` times more in its last step, so the
    epoch has `world` extra presentations, one above the allowance. Per rank: warnings per epoch, allowance, csl."""
    ranks = fake_ranks(monkeypatch, world)
    caught: dict[int, list[str]] = defaultdict(list)
    plans, sizes = [], []
    for epoch in range(2):
        shards = _shards(n, world, epoch)
        pad = world * len(shards[0]) - n
        sizes.append(len(shards[0]))  # the sampler's own presentations per rank
        if epoch == 1:
            shards[0] = shards[0] + [shards[0][0]] * (world - pad)
        plans.append(shards)

    def step(rank: int) -> tuple[list[list[str]], int, list[float]]:
        tracker = SampleTracker(n, proxies=["csl"])
        said = []
        for shards, size in zip(plans, sizes):
            steps = -(-max(len(s) for s in shards) // batch)
            for s in range(steps):
                idx = torch.tensor(shards[rank][s * batch:(s + 1) * batch], dtype=torch.int64)
                added = torch.arange(s * batch, s * batch + len(idx)) >= size  # rank 0's added repeats: 1000
                tracker.update(idx, losses=idx.float() + 1 + 1000 * added, gather=True)
            before = len(caught[threading.get_ident()])
            tracker.end_epoch()
            said.append(_repeats(caught[threading.get_ident()][before:]))
        return said, tracker.allowed_repeats, tracker.scores()["csl"].tolist()

    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        caught[threading.get_ident()].append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        out = ranks.run(step)
    return [plans, out]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sampler_padding_is_silent_and_one_presentation_more_is_warned(monkeypatch: pytest.MonkeyPatch, path: str,
                                                                      world: int) -> None:
    """Before the fix epoch 2 was silent too at every N: its repeated samples (the padded ones, of which the added
    presentations repeat the first) never outnumber world size - 1."""
    for n in range(1, 13):
        plans, out = _ddp_run(monkeypatch, n, world, batch=2)
        order = [i for shard in plans[1] for i in shard]
        head, tail = _expected(order, 2, world, world - 1)
        for rank, got in enumerate(out):
            assert not isinstance(got, BaseException), (n, rank, got)
            said, allowed, csl = got
            assert allowed == world - 1 and said[0] == [], (n, rank, said)
            assert len(said[1]) == 1 and said[1][0].startswith(head) and said[1][0].endswith(tail), (n, rank, said)
            assert csl == [2.0 * (i + 1) for i in range(n)], (n, rank)  # first presentations only


# -- any epoch, at the allowance's boundary ------------------------------------------------------------------------
def _epochs(seed: int) -> Iterator[tuple[int, list[list[int]]]]:
    """Epochs of batches from samplers with and without replacement, repeats within and across batches."""
    rng = np.random.default_rng(seed)
    for _ in range(12):
        n = int(rng.integers(1, 9))
        draws = int(rng.integers(1, 3 * n + 2))
        order = rng.integers(0, n, size=draws).tolist() if rng.random() < 0.7 else rng.permutation(n).tolist()
        cut = sorted(set(rng.integers(1, max(2, len(order)), size=3).tolist()))
        yield n, [order[a:b] for a, b in zip([0, *cut], [*cut, len(order)]) if order[a:b]]


def _one_epoch(n: int, batches: list[list[int]], allowed: int) -> list[str]:
    tracker = SampleTracker(n, proxies=["csl"])
    tracker.allowed_repeats = allowed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for b in batches:
            tracker.update(b, losses=torch.ones(len(b)))
        tracker.end_epoch()
    return _repeats([str(w.message) for w in caught])


def test_the_warning_comes_exactly_above_the_allowance(path: str) -> None:
    """extra = presentations - distinct samples, counted here from the batches: silent at allowed = extra, warned
    at extra - 1 (was: compared with the samples presented more than once, fewer whenever one came 3 times)."""
    tripled = 0
    for n, batches in _epochs(seed=31):
        order = [i for b in batches for i in b]
        extra = len(order) - len(set(order))
        tripled += max(Counter(order).values()) > 2
        assert _one_epoch(n, batches, allowed=extra) == [], (n, batches)
        if extra:
            head, tail = _expected(order, 1, extra, extra - 1)
            (said,) = _one_epoch(n, batches, allowed=extra - 1)
            assert said.startswith(head) and said.endswith(tail), (n, batches, said)
    assert tripled >= 3  # the cases the old count got wrong are among them


# -- resumed mid-epoch -----------------------------------------------------------------------------------------------
N = 6
EPOCH_1 = [[0, 1], [2, 3], [4, 5]]
EPOCH_2 = [[0, 1, 0], [2, 0], [3, 4, 5]]  # sample 0 three times: 1 repeated sample, 2 extra presentations


def _resumed(cut: int | None, allowed: int, edit: Callable[[dict[str, Any]], None] = lambda s: None) -> list[str]:
    """Two epochs (one allowance for both), the tracker saved after `cut` batches of epoch 2 and resumed by a new
    one (None: never); `edit` changes the state first. The repeat warnings of epoch 2."""
    tracker = SampleTracker(N, proxies=["csl"])
    tracker.allowed_repeats = allowed
    for b in EPOCH_1:
        tracker.update(b, losses=torch.ones(len(b)))
    tracker.end_epoch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, b in enumerate(EPOCH_2):
            if i == cut:
                state = tracker.state_dict()
                edit(state)
                tracker = SampleTracker(N, proxies=["csl"])
                tracker.load_state_dict(state)
                tracker.allowed_repeats = allowed  # the resumed run's own, set again as the docs say
            tracker.update(b, losses=torch.full((len(b),), float(i + 1)))
        tracker.end_epoch()
        assert tracker.scores()["csl"].tolist() == [2.0, 2.0, 3.0, 4.0, 4.0, 4.0]  # first presentations
    return _repeats([str(w.message) for w in caught])


def test_a_resumed_epoch_warns_as_the_uninterrupted_one(path: str) -> None:
    """Saved after each batch of the epoch that shows sample 0 three times: warned at allowed 1 (was silent: 1
    repeated sample), silent at 2, as without the resume; the count of extra presentations survives the state."""
    order = [i for b in EPOCH_2 for i in b]
    head, tail = _expected(order, 2, 2, 1)
    for cut in (None, 1, 2):
        (said,) = _resumed(cut, allowed=1)
        assert said.startswith(head) and said.endswith(tail), (cut, said)
        assert _resumed(cut, allowed=2) == [], cut


def _old(state: dict[str, Any], batches: bool) -> None:
    """The state as a memprox before gap31 saved it (and, `batches=False`, before hint30's batch sizes)."""
    del state["signals"]["extra_host"]
    if not batches:
        del state["signals"]["batches"]


def test_a_state_saved_before_the_count_still_loads() -> None:
    """Without `extra_host` the host count is what the epoch's batch sizes say (exact); without those too, one
    per repeated sample, the old rule's count: such a state warns at most as it did."""
    (said,) = _resumed(2, allowed=1, edit=lambda s: _old(s, batches=True))
    assert said.startswith(_expected([i for b in EPOCH_2 for i in b], 2, 2, 1)[0])
    assert _resumed(2, allowed=1, edit=lambda s: _old(s, batches=False)) == []  # 2 extra taken as 1: as before
    (said,) = _resumed(2, allowed=0, edit=lambda s: _old(s, batches=False))
    assert said.endswith("(1 presentation(s) beyond each sample's first this epoch, above tracker.allowed_repeats "
                         "= 0)")


@pytest.mark.parametrize("bad", [-1, True, 1.0, "2", 0])
def test_a_damaged_count_is_refused_and_changes_nothing(bad: object) -> None:
    """0 is damaged too: the state's one repeated sample came at least twice."""
    tracker = SampleTracker(N, proxies=["csl"])
    tracker.update([0, 1, 0], losses=torch.ones(3))
    state = tracker.state_dict()
    assert (state["signals"]["extra_host"], state["signals"]["repeated"]) == (1, [0])
    state["signals"]["extra_host"] = bad
    fresh = SampleTracker(N, proxies=["csl"])
    with pytest.raises(HarnessError, match=r"incomplete or damaged: extra_host = "):
        fresh.load_state_dict(state)
    assert fresh.epochs == 0 and not fresh._pending


def test_a_copy_keeps_the_count_of_batches_it_has_not_recorded() -> None:
    """copy() takes the state without recording the held batches (`batch_log`): the copy counts them itself."""
    tracker = SampleTracker(N, proxies=["csl"])
    tracker.allowed_repeats = 1
    for b in EPOCH_2:
        tracker.update(b, losses=torch.ones(len(b)))
    twin = tracker.copy()
    for t in (tracker, twin):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t.end_epoch()
        assert len(_repeats([str(w.message) for w in caught])) == 1


# -- no read of the device per update ----------------------------------------------------------------------------
def test_one_device_read_per_epoch_and_none_per_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indices on the device: update() reads nothing back, end_epoch() once (its checks, the extra presentations
    among them); counted on the CPU by the tensor methods a read goes through."""
    def device_path(self: Inputs, indices: Any, where: str = "update()") -> tuple[None, torch.Tensor]:
        return None, torch.as_tensor(indices).to(self.device, torch.int64)

    monkeypatch.setattr(Inputs, "batch_indices", device_path)
    reads: list[str] = []
    for name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            reads.append(_name)
            return _f(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    tracker = SampleTracker(N, proxies=["csl"])
    tracker.allowed_repeats = 4  # the epoch's 4 extra presentations: no warning, whose names are a second read
    tracker.update(torch.tensor([0, 1]), losses=torch.ones(2))  # the first makes the buffers
    reads.clear()
    for b in EPOCH_2:
        tracker.update(torch.tensor(b), losses=torch.ones(len(b)))
    assert reads == []
    tracker.end_epoch()
    assert reads == ["tolist"]
