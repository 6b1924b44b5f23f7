"""The whole-passes hint of the repeated-presentations warning (hint30) inside real training
integrations (atthint30).

A Lightning fit resumed from a checkpoint at half an epoch: Lightning finishes the cut epoch with the
loader's first half again, so the open epoch holds its first half twice -- one whole pass, twice -- and
the tracker told the user to call end_epoch() after each epoch (the callback does) or to pass dataset
indices (it does). The resume's own warning names the cause; the hint is now left out for that epoch.
Also held here: the hint under `update(gather=True)` with a `DistributedSampler` (two ranks as threads),
the batch sizes it counts being the gathered ones, and a mid-epoch state or copy going on bitwise."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from harness import SampleTracker
from harness.tracker.signals import Presentations

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import FakeRanks, fake_ranks  # noqa: E402

REPEATS = "presented more than once"


def _kind(messages: list[str]) -> str | None:
    """The hint of the repeat warning among `messages`: "all", "dropped", "none" (warned, no hint), None."""
    said = [m for m in messages if REPEATS in m]
    if not said:
        return None
    return "all" if "Every sample this epoch" in said[0] else "dropped" if "Nearly every" in said[0] else "none"


def _caught(fn: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in caught]


# -- Lightning: a fit resumed at half an epoch ----------------------------------------------------------------
N_L, B_L = 40, 10  # 4 batches an epoch, unshuffled: a checkpoint after 2 is half the epoch


def _lightning_fit(tmp: Path, ckpt: Path | None = None, every: int | None = None) -> tuple[Any, list[str]]:
    lightning = pytest.importorskip("lightning")
    from harness.integrations import WithIndex
    from harness.integrations.lightning import CSLCallback

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(6, 3)

        def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            x, y, idx = batch
            losses = nn.functional.cross_entropy(self.net(x), y, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx}

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_L, 6, generator=g)
    y = (x[:, 0] > 0).long()
    csl = CSLCallback(N_L)
    callbacks: list = [csl]
    if every:
        callbacks.append(lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp / "steps", every_n_train_steps=every,
                                                                     save_top_k=-1))
    trainer = lightning.Trainer(callbacks=callbacks, accelerator="cpu", devices=1, logger=False, max_epochs=1,
                                enable_checkpointing=bool(every), enable_progress_bar=False,
                                enable_model_summary=False, num_sanity_val_steps=0)
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=B_L)
    _, said = _caught(lambda: trainer.fit(Module(), loader, ckpt_path=ckpt))
    return csl, said


def test_a_fit_resumed_at_half_an_epoch_is_not_told_to_call_end_epoch(tmp_path: Path) -> None:
    """Samples 0..19 trained before the checkpoint and again after it: the repeat warning names the 20,
    without the whole-passes hint (it said "Every sample this epoch presented came again, in whole
    passes ... call end_epoch() after each epoch"); the record's open epoch keeps that mark in its state."""
    _lightning_fit(tmp_path, every=2)
    csl, said = _lightning_fit(tmp_path / "resumed", tmp_path / "steps" / "epoch=0-step=2.ckpt")
    assert any("resumes from a checkpoint saved within an epoch, after 2 of its 4" in m for m in said)
    repeats = [m for m in said if REPEATS in m]
    assert len(repeats) == 1 and repeats[0].startswith("SampleTracker: 20 sample(s) were presented more than once")
    assert _kind(said) == "none"
    assert csl.tracker.epochs == 1 and (csl.scores()["csl"] > 0).sum() == 20  # the last 2 batches: never trained


def test_the_mark_rules_out_whole_passes_on_the_host_and_on_the_device() -> None:
    """`not_whole_passes` on both paths of `Presentations` (device indices: the CUDA path, run on the CPU)."""
    for device_path in (False, True):
        p = Presentations(8, torch.device("cpu"))
        for _ in range(2):
            for half in (torch.arange(4), torch.arange(4, 8)):
                p.batches.add(4)
                p.slots(half) if device_path else p.slots(half, half.numpy())
        count = int(p.repeated())
        assert count == 8 and p.pass_kind(count) == "all"
        p.not_whole_passes()
        assert p.pass_kind(count) is None
        p.reset()
        assert p.first_repeat is None  # the next epoch is judged anew


# -- update(gather=True) under a DistributedSampler ---------------------------------------------------------------
@pytest.fixture
def ranks(monkeypatch: pytest.MonkeyPatch) -> FakeRanks:
    return fake_ranks(monkeypatch)


@pytest.mark.parametrize(("n", "batch", "sampler_drop", "loader_drop", "kind"), [
    (40, 4, False, True, "all"),  # 20 per rank, 5 whole batches: nothing dropped
    (41, 4, False, True, "dropped"),  # padded to 42, 21 per rank: 1 dropped a rank a pass
    (41, 4, True, True, "dropped"),  # 20 per rank, nothing dropped by the loader, 1 by the sampler
    (41, 4, False, False, "all"),  # the padding repeat comes after the whole pass
    (43, 3, True, False, "dropped"),  # the sampler drops one a pass, 7 whole batches a rank
])
def test_ddp_epochs_closed_once_get_the_hint_and_closed_each_none(ranks: FakeRanks, n: int, batch: int,
                                                                   sampler_drop: bool, loader_drop: bool,
                                                                   kind: str) -> None:
    """3 epochs of a DistributedSampler (shuffled, set_epoch) over 2 ranks: closed once, both ranks are told
    the hint; closed each epoch, nothing is said. The batch sizes counted are the gathered ones."""

    def loop(rank: int, once: bool) -> list[int] | None:
        tracker = SampleTracker(n, proxies=["csl"])
        sampler = DistributedSampler(range(n), num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=sampler_drop)
        loader = DataLoader(list(range(n)), batch_size=batch, sampler=sampler, drop_last=loader_drop)
        counted = None
        for epoch in range(3):
            sampler.set_epoch(epoch)
            for idx in loader:
                tracker.update(idx, losses=torch.ones(len(idx)), gather=True)
            if epoch == 0:
                assert tracker._signals is not None
                counted = tracker._signals.presentations.batches.state()
            if not once:
                tracker.end_epoch()
        if once:
            tracker.end_epoch()
        return counted

    for once in (True, False):
        out, said = _caught(lambda once=once: ranks.run(lambda rank: loop(rank, once)))
        assert not [e for e in out if isinstance(e, BaseException)], out
        kinds = [_kind([m]) for m in said if REPEATS in m]
        assert kinds == ([kind, kind] if once else [])
        per_rank = -(-n // 2) if not sampler_drop else n // 2
        full = per_rank // batch
        tail = 0 if loader_drop else per_rank % batch
        sizes = [2 * batch] * full + ([2 * tail] if tail else [])
        assert out[0] == out[1] == [min(sizes), max(sizes), sum(sizes)]


# -- a mid-epoch state or copy goes on as the uninterrupted tracker ----------------------------------------------
def _epochs(n: int, batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):  # a shuffling DataLoader with drop_last=True, three epochs closed once
        order = torch.randperm(n, generator=g)
        out += [order[i:i + batch] for i in range(0, n - n % batch, batch)]
    return out


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (23, 4)])
def test_a_mid_epoch_state_or_copy_goes_on_bitwise_with_the_same_hint(n: int, batch: int) -> None:
    """Cut at every batch, resumed from a saved state, a copy, or a copy's saved state: the same hint
    ("dropped") and the same scores, bitwise, as the tracker never cut."""
    batches = _epochs(n, batch, n)
    logits = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(n) % 4

    def feed(tracker: SampleTracker, part: list[torch.Tensor]) -> SampleTracker:
        for b in part:
            tracker.update(b, logits=logits[b], labels=labels[b])
        return tracker

    ref = SampleTracker(n)
    _, said = _caught(lambda: (feed(ref, batches), ref.end_epoch()))
    assert _kind(said) == "dropped"
    expected = ref.scores()
    for cut in range(1, len(batches)):
        for how in ("state", "copy", "copy's state"):
            tracker = feed(SampleTracker(n), batches[:cut])
            if how == "copy":
                resumed = tracker.copy()
            else:
                resumed = SampleTracker(n)
                resumed.load_state_dict(_roundtrip((tracker if how == "state" else tracker.copy()).state_dict()))
            _, said = _caught(lambda r=resumed, c=cut: (feed(r, batches[c:]), r.end_epoch()))
            assert _kind(said) == "dropped", (cut, how)
            scores = resumed.scores()
            assert scores.equals(expected), (cut, how)
            assert np.isfinite(scores["csl"].to_numpy()).all()
