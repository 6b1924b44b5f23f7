"""Lightning run for tests/test_integrations_lightning.py: `python tests/_lightning_ddp.py DEVICES OUT.npz`.

A run of its own process because Lightning's CPU DDP ("ddp" strategy) starts rank 1 by running this
script again. The model makes the arithmetic exact whatever the split into ranks: one-hot inputs
into a linear layer without bias, so each sample's logits are its own weight row, each row's
gradient comes from its sample alone (every other term is an exact zero), and the batch means
divide by powers of two. DDP's gradient average of two shards of 8 is then bitwise the
single-process mean over 16, and both runs must give bitwise the same CSL.
"""

from __future__ import annotations

import sys

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.integrations import WithIndex
from harness.integrations.lightning import CSLCallback

N, C, EPOCHS, LR = 64, 4, 3, 0.5


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.eye(N)
    y = torch.as_tensor(np.random.default_rng(0).integers(0, C, N))
    return x, y


def init_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(N, C, bias=False)


class OneHot(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = init_model()

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        logits = self.model(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        return {"loss": losses.mean(), "losses": losses, "indices": idx, "logits": logits, "labels": y}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def run(devices: int, batch_size: int) -> CSLCallback:
    x, y = data()
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=batch_size, shuffle=False)
    csl = CSLCallback(N)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        max_epochs=EPOCHS, callbacks=[csl], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(OneHot(), loader)
    return csl


if __name__ == "__main__":
    devices, out = int(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    callback = run(devices, 16 // devices)  # the same global batch of 16 samples
    scores = callback.scores()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    np.savez(f"{out}.rank{rank}.npz", **{c: scores[c].to_numpy(dtype=float) for c in scores.columns
                                         if c not in ("label",)})
