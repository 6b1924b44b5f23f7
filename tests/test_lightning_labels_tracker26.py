"""The Lightning callback passes a `training_step`'s labels to `SampleTracker.update`: a -100
(cross_entropy's ignore_index) among them, with "losses" alone, was recorded as the loss of 0 that
cross_entropy gives it, a silently lowest csl; the fit now stops with the tracker's line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.errors import HarnessError

lightning = pytest.importorskip("lightning")

from harness.integrations import WithIndex  # noqa: E402
from harness.integrations.lightning import CSLCallback  # noqa: E402

N = 24


class _Module(lightning.LightningModule):  # type: ignore[name-defined]  # imported by importorskip
    def __init__(self, ignored: int | None, peek: CSLCallback | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 3)
        self.ignored = ignored
        self.own = np.zeros(N)
        self.peek, self.peeks = peek, []

    def on_train_epoch_end(self) -> None:
        if self.peek is not None:  # after the callback closed the epoch (docs/integrations.md)
            self.peeks.append((self.peek.tracker.copy().scores()["csl"].to_numpy(), self.own.copy()))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y, idx = batch
        y = torch.where(idx == self.ignored, -100, y) if self.ignored is not None else y
        losses = nn.functional.cross_entropy(self.net(x), y, reduction="none")
        self.own[idx.numpy()] += losses.detach().double().numpy()
        return {"loss": losses.mean(), "losses": losses, "indices": idx, "labels": y}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(module: _Module, csl: CSLCallback | None = None) -> CSLCallback:
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(N, 4, generator=gen), torch.randint(0, 3, (N,), generator=gen))
    csl = csl or CSLCallback(N)
    trainer = lightning.Trainer(callbacks=[csl], accelerator="cpu", devices=1, logger=False, max_epochs=2,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(WithIndex(data), batch_size=8, shuffle=True, generator=gen))
    return csl


def test_lightning_labels_of_ignore_index_stop_the_fit() -> None:
    with pytest.raises(HarnessError, match=r"update\(\): label -100 is not a class id.*leave unlabeled samples out"):
        with pytest.warns(Warning, match=r"the fit stopped by HarnessError in epoch 1"):
            _fit(_Module(ignored=5))


def test_lightning_losses_with_labels_sum_as_the_steps_own() -> None:
    module = _Module(ignored=None)
    csl = _fit(module)
    np.testing.assert_array_equal(csl.scores()["csl"].to_numpy(), module.own)


def test_lightning_scores_of_a_copy_each_epoch_and_the_fit_goes_on() -> None:
    csl = CSLCallback(N)
    module = _Module(ignored=None, peek=csl)
    _fit(module, csl)
    assert len(module.peeks) == 2
    for peeked, own in module.peeks:  # each epoch's copy: the csl of the epochs so far
        np.testing.assert_array_equal(peeked, own)
    np.testing.assert_array_equal(csl.scores()["csl"].to_numpy(), module.own)
