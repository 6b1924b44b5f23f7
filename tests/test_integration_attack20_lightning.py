"""Attack 20 on `CSLCallback`: a fit resumed from a checkpoint saved mid-epoch
(`ModelCheckpoint(every_n_train_steps=...)`, `fit(ckpt_path=...)`) against the uninterrupted fit,
with the record's values checked against a loop written by hand that trains what Lightning trains."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning")

from harness.integrations import WithIndex  # noqa: E402
from harness.integrations.lightning import CSLCallback  # noqa: E402

N, BATCH, EPOCHS = 50, 10, 3  # 5 batches an epoch, unshuffled: batch k holds samples 10k..10k+9
_G = torch.Generator().manual_seed(0)
X = torch.randn(N, 6, generator=_G)
Y = (X[:, 0] > 0).long()


def _net() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(6, 3)


class _Module(lightning.LightningModule):  # type: ignore[name-defined]  # imported by importorskip
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def training_step(self, batch, batch_idx):
        xb, yb, idx = batch
        losses = nn.functional.cross_entropy(self.net(xb), yb, reduction="none")
        return {"loss": losses.mean(), "losses": losses, "indices": idx}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Resumable:
    """The batches of a plain unshuffled loader, resumable the way Lightning asks
    (`state_dict` / `load_state_dict`): the state is how many batches of the epoch were taken, and a
    loaded state makes the next epoch start after them."""

    def __init__(self) -> None:
        self.taken, self.skip = 0, 0

    def __len__(self) -> int:
        return N // BATCH

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        start, self.skip = self.skip, 0
        for k in range(start, len(self)):
            self.taken = k + 1
            idx = torch.arange(k * BATCH, (k + 1) * BATCH)
            yield X[idx], Y[idx], idx
        self.taken = 0

    def state_dict(self) -> dict[str, Any]:
        return {"taken": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skip = int(state["taken"])


def _fit(out: Path, ckpt: Path | None = None, every: int | None = None, resumable: bool = False):
    csl = CSLCallback(N)
    callbacks: list = [csl]
    if every:
        callbacks.append(lightning.pytorch.callbacks.ModelCheckpoint(dirpath=out / "steps", every_n_train_steps=every,
                                                                     save_top_k=-1))
    trainer = lightning.Trainer(callbacks=callbacks, accelerator="cpu", devices=1, logger=False, max_epochs=EPOCHS,
                                enable_checkpointing=bool(every), enable_progress_bar=False,
                                enable_model_summary=False, num_sanity_val_steps=0)
    loader = _Resumable() if resumable else DataLoader(WithIndex(TensorDataset(X, Y)), batch_size=BATCH)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_Module(), loader, ckpt_path=ckpt)
        scores = csl.scores()
    return csl, scores, [str(w.message) for w in caught if str(w.message).startswith(("CSLCallback", "SampleTracker"))]


def _by_hand(trained: list[list[int]], recorded: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A plain loop training the batches `trained` (each epoch's batch numbers, in order) with the
    module's model and SGD; csl sums, per epoch, each sample's loss at its first presentation among
    the epoch's batches `recorded` (their positions in `trained`). Returns (csl, epochs presented)."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    csl, presented = np.zeros(N), np.zeros(N, dtype=np.int64)
    for batches, keep in zip(trained, recorded):
        seen = np.zeros(N, dtype=bool)
        for position, k in enumerate(batches):
            idx = torch.arange(k * BATCH, (k + 1) * BATCH)
            losses = nn.functional.cross_entropy(net(X[idx]), Y[idx], reduction="none")
            if position in keep:
                new = idx.numpy()[~seen[idx.numpy()]]
                csl[new] += losses.detach().numpy()[~seen[idx.numpy()]]
                seen[new] = True
            opt.zero_grad()
            losses.mean().backward()
            opt.step()
        presented += seen
    return csl, presented


def test_the_uninterrupted_fit_records_what_a_plain_loop_computes(tmp_path: Path) -> None:
    _, scores, said = _fit(tmp_path)
    want, presented = _by_hand([list(range(5))] * EPOCHS, [list(range(5))] * EPOCHS)
    assert said == [] and presented.tolist() == [EPOCHS] * N
    np.testing.assert_allclose(scores["csl"], want, rtol=1e-6, atol=1e-6)


def test_a_mid_epoch_resume_records_the_replayed_batches_it_says_it_records(tmp_path: Path) -> None:
    """Checkpoint after 2 of 5 batches: the resumed fit trains batches 0, 1, 2 to finish the cut
    epoch (a plain loader starts over), then whole epochs. The record keeps batches 0 and 1's first
    presentations (before the checkpoint), batch 2 at the weights after 0, 1, 0, 1, and nothing of
    batches 3 and 4 in that epoch: the values a plain loop training those batches gives."""
    _fit(tmp_path, every=2)
    csl, scores, said = _fit(tmp_path / "resumed", tmp_path / "steps" / "epoch=0-step=2.ckpt")
    want, presented = _by_hand([[0, 1, 0, 1, 2]] + [list(range(5))] * (EPOCHS - 1),
                               [[0, 1, 4]] + [list(range(5))] * (EPOCHS - 1))
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), presented)
    np.testing.assert_allclose(scores["csl"], want, rtol=1e-6, atol=1e-6)
    assert any("trained twice in it and those of its last 2 not at all" in s for s in said)
    assert any("SampleTracker: 20 sample(s) were presented more than once in epoch 1" in s for s in said)
    assert any("20 sample(s) were presented in fewer than all 3 epochs (first: [30, 31" in s for s in said)


def test_a_resumable_loader_resumed_mid_epoch_scores_as_the_uninterrupted_fit(tmp_path: Path) -> None:
    """docs/integrations.md: a mid-epoch checkpoint with a resumable DataLoader goes on in the open
    epoch and says nothing (untested before this file). Lightning saves the loader's state at the checkpoint and
    restores it: the resumed fit must train, and score, as the uninterrupted one."""
    _, whole, _ = _fit(tmp_path / "whole", resumable=True)
    _fit(tmp_path, every=2, resumable=True)
    csl, scores, said = _fit(tmp_path / "resumed", tmp_path / "steps" / "epoch=0-step=2.ckpt", resumable=True)
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), np.full(N, EPOCHS))
    assert said == []
    np.testing.assert_array_equal(scores["csl"].to_numpy(), whole["csl"].to_numpy())


class _Sized(_Module):
    """The module with its own loader of `batch_size` rows, whose forward runs out of CUDA memory
    (the error Lightning's batch-size finder reduces after) for batches above 5 rows."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(WithIndex(TensorDataset(X[:40], Y[:40])), batch_size=self.batch_size)

    def training_step(self, batch, batch_idx):
        if batch[0].shape[0] > 5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().training_step(batch, batch_idx)


@pytest.mark.usefixtures("young_gc_in_lightning")  # a full gc.collect per trial frees nothing here
def test_the_batch_size_finders_trials_are_not_recorded(tmp_path: Path) -> None:
    """BatchSizeFinder (Lightning's search for the largest batch that fits) trains a few steps per
    batch size -- 2, 4, then 8, which runs out of memory -- and restores the model from a checkpoint
    before the fit: the record must hold the fit alone, bitwise the fit in batches of 4 without it."""
    finder = lightning.pytorch.callbacks.BatchSizeFinder(mode="power", steps_per_trial=1, init_val=2, max_trials=3)

    def fit(batch_size: int, *extra) -> tuple[CSLCallback, object]:
        csl = CSLCallback(40)
        trainer = lightning.Trainer(callbacks=[csl, *extra], accelerator="cpu", devices=1, logger=False,
                                    max_epochs=2, enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, num_sanity_val_steps=0,
                                    default_root_dir=str(tmp_path))
        module = _Sized(batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            trainer.fit(module)
        return csl, module

    searched, module = fit(2, finder)
    plain, _ = fit(4)
    assert module.batch_size == 4 and searched.tracker.epochs == 2
    np.testing.assert_array_equal(searched.tracker.epochs_presented(), np.full(40, 2))
    assert searched.scores().equals(plain.scores())


class _Seen(_Module):
    """The module, keeping the indices of every batch it trains."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[2].tolist())
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("every, checkpoint", [(7, "epoch=1-step=7.ckpt"), (2, "epoch=0-step=2.ckpt")])
def test_a_shuffled_loader_resumed_mid_epoch_is_not_said_to_replay_the_cut_epochs_batches(
        tmp_path: Path, every: int, checkpoint: str) -> None:
    """shuffle=True, checkpoint after 2 of epoch 2's 5 batches: started over, the loader's random
    sampler draws its first order in this process, epoch 1's, so the 3 batches that finish the
    epoch are not its first 2 batches again (here 11 samples trained twice, 11 not at all). The
    warning said "the samples of its first 2 batch(es) are trained twice in it and those of its last
    2 not at all"; it now says the order is another. Cut in epoch 1, the first order is the cut
    epoch's where torch's generator is seeded alike (the module seeds it): the replay the warning
    then describes, under that condition."""
    def fit(out: Path, ckpt: Path | None = None, every: int | None = None) -> tuple[CSLCallback, _Seen, list[str]]:
        csl = CSLCallback(N)
        saves = [lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=every,
                                                             save_top_k=-1)] if every else []
        trainer = lightning.Trainer(callbacks=[csl, *saves], accelerator="cpu", devices=1, logger=False,
                                    max_epochs=EPOCHS, enable_checkpointing=bool(every), enable_progress_bar=False,
                                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(out))
        module = _Seen()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, DataLoader(WithIndex(TensorDataset(X, Y)), batch_size=BATCH, shuffle=True),
                        ckpt_path=ckpt)
            csl.scores()
        said = [str(w.message) for w in caught if str(w.message).startswith(("CSLCallback", "SampleTracker"))]
        return csl, module, said

    _, first, _ = fit(tmp_path / "first", every=every)
    csl, resumed, said = fit(tmp_path / "resumed", tmp_path / "steps" / checkpoint)
    done = every - 2  # batches trained before the cut epoch
    before, after = set(sum(first.seen[done:every], [])), set(sum(resumed.seen[:3], []))
    twice, never = before & after, set(range(N)) - before - after
    cut = [s for s in said if s.startswith("CSLCallback: the fit resumes")]
    assert len(cut) == 1 and "in the first order its random sampler draws in this process" in cut[0]
    if every == 7:
        assert twice != before and len(twice) == len(never) > 0  # not the cut epoch's first 2 batches again
        assert "not the cut epoch's (a later one" in cut[0] and "first 2 batch(es)" not in cut[0]
    else:
        assert twice == before and len(never) == 20  # the cut epoch's order again
        assert "which is the cut epoch's only if its generator" in cut[0] and "first 2 batch(es)" in cut[0]
    epoch = 2 if every == 7 else 1
    assert any(f"{len(twice)} sample(s) were presented more than once in epoch {epoch}" in s for s in said)
    presented = csl.tracker.epochs_presented()
    assert sorted(np.flatnonzero(presented < EPOCHS).tolist()) == sorted(never)
