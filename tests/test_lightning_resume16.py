"""CSLCallback resumed within an epoch: the warning's counts are those of what Lightning trains
(integrations audit, helper-95). With b of B batches of the cut epoch done, Lightning finishes the
epoch with B - b batches drawn from the start of a plain DataLoader: min(b, B - b) batches are
trained twice and as many not at all. The warning counted in steps as if b were replayed ("first 2
trained again, last 3 not at all" at 2 of 5), multiplied by nothing under gradient accumulation,
and described a replay when a fit stopped by max_steps and resumed with max_epochs starts the next
epoch. And a resumed fit handed a new model object, as is usual, warned "another model".
(These replace test_tracker_review6's two cases, 2 of 4 batches: symmetric, so the counts agreed.)"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning")

from harness.integrations import WithIndex  # noqa: E402
from harness.integrations.lightning import CSLCallback  # noqa: E402

N, BATCH = 50, 10  # 5 batches an epoch, unshuffled: batch k holds samples 10k..10k+9


class _Module(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(6, 3)

    def training_step(self, batch, batch_idx):
        xb, yb, idx = batch
        losses = nn.functional.cross_entropy(self.net(xb), yb, reduction="none")
        return {"loss": losses.mean(), "losses": losses, "indices": idx}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp: Path, ckpt: Path | None = None, every: int | None = None, csl: CSLCallback | None = None,
         module: _Module | None = None, **kw) -> tuple[CSLCallback, object, list[str]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=g)
    y = (x[:, 0] > 0).long()
    csl = csl or CSLCallback(N)
    callbacks: list = [csl]
    if every:
        callbacks.append(lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp / "steps", every_n_train_steps=every,
                                                                     save_top_k=-1))
    trainer = lightning.Trainer(callbacks=callbacks, accelerator="cpu", devices=1, logger=False,
                                enable_checkpointing=bool(every), enable_progress_bar=False, enable_model_summary=False,
                                num_sanity_val_steps=0, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module or _Module(), DataLoader(WithIndex(TensorDataset(x, y)), batch_size=BATCH), ckpt_path=ckpt)
    return csl, trainer, [str(w.message) for w in caught if str(w.message).startswith("CSLCallback")]


def _per_batch(csl: CSLCallback) -> list[int]:
    presented = csl.tracker.epochs_presented().reshape(N // BATCH, BATCH)
    assert (presented == presented[:, :1]).all()  # whole batches
    return presented[:, 0].tolist()


def _cut(message: str) -> str:
    return re.search(r"after \d+ of its \d+ optimizer steps \(\d+ of \d+ batches\)", message).group(0)


@pytest.mark.parametrize("accumulate, checkpoint, cut, twice, presented", [
    (1, "epoch=0-step=2.ckpt", "after 2 of its 5 optimizer steps (2 of 5 batches)", 2, [3, 3, 3, 2, 2]),
    (2, "epoch=0-step=2.ckpt", "after 2 of its 3 optimizer steps (4 of 5 batches)", 1, [3, 3, 3, 3, 2]),
])
def test_a_step_checkpoint_says_how_many_batches_are_trained_twice_and_not_at_all(
        tmp_path, accumulate, checkpoint, cut, twice, presented) -> None:
    _fit(tmp_path, every=2, max_epochs=3, accumulate_grad_batches=accumulate)
    csl, _, said = _fit(tmp_path, tmp_path / "steps" / checkpoint, max_epochs=3, accumulate_grad_batches=accumulate)
    assert len(said) == 1 and _cut(said[0]) == cut
    assert f"the samples of its first {twice} batch(es) are trained twice in it and those of its last {twice} not " \
           "at all" in said[0]
    assert f"those of the last {twice} batch(es) have none in this epoch" in said[0]
    # the uninterrupted fit presents every batch 3 times: the last `twice` batches miss the cut epoch
    assert _per_batch(csl) == presented and presented.count(2) == twice


def test_a_step_checkpoint_at_an_epochs_end_says_nothing(tmp_path) -> None:
    _fit(tmp_path, every=5, max_epochs=3)
    csl, _, said = _fit(tmp_path, tmp_path / "steps" / "epoch=0-step=5.ckpt", max_epochs=3)
    assert said == [] and _per_batch(csl) == [3] * 5


def test_max_steps_resumed_by_steps_records_the_rest_as_a_shorter_epoch(tmp_path) -> None:
    first, trainer, _ = _fit(tmp_path, max_steps=7)  # 5 steps, then 2 of epoch 1
    trainer.save_checkpoint(tmp_path / "cut.ckpt")
    csl, _, said = _fit(tmp_path, tmp_path / "cut.ckpt", max_steps=15)
    assert len(said) == 1 and _cut(said[0]) == "after 2 of its 5 optimizer steps (2 of 5 batches)"
    assert "another, shorter epoch: the samples of the first 2 batch(es) count one epoch more, those of the last 2 " \
           "one fewer" in said[0]
    assert _per_batch(csl) == [4, 4, 3, 2, 2] and csl.tracker.epochs == 4  # uninterrupted: [3] * 5


def test_max_steps_resumed_by_epochs_starts_the_next_epoch_and_says_so(tmp_path) -> None:
    _, trainer, _ = _fit(tmp_path, max_steps=7)
    trainer.save_checkpoint(tmp_path / "cut.ckpt")
    csl, _, said = _fit(tmp_path, tmp_path / "cut.ckpt", max_epochs=3)
    assert len(said) == 1 and "replay" not in said[0] and "drawn from the start" not in said[0]
    assert "Lightning starts the next epoch: the samples of the cut epoch's last 3 batch(es) are not trained in it, " \
           "and count one epoch fewer" in said[0]
    assert _per_batch(csl) == [3, 3, 2, 2, 2] and csl.tracker.epochs == 3


def test_resuming_with_the_same_callback_and_a_new_model_object_is_no_other_model(tmp_path) -> None:
    """fit(Module(), ckpt_path=...) with the callback of the fit that saved it: the record is the
    checkpoint's, and the scores equal the uninterrupted fit's, so no 'another model' warning."""
    whole, _, _ = _fit(tmp_path / "whole", max_epochs=4)
    csl, trainer, _ = _fit(tmp_path, max_epochs=2)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed, _, said = _fit(tmp_path, tmp_path / "last.ckpt", csl=csl, max_epochs=4)
    assert said == []
    np.testing.assert_array_equal(resumed.scores()["csl"].to_numpy(), whole.scores()["csl"].to_numpy())
    # another model without a checkpoint still warns
    other = CSLCallback(N)
    _fit(tmp_path / "a", csl=other, max_epochs=1)
    _, _, said = _fit(tmp_path / "b", csl=other, max_epochs=2)
    assert any("this fit trains another model than the fit before" in s for s in said)
