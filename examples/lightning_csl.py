"""CSL from a PyTorch Lightning run: digits with 10 % flipped labels, the flipped ones come out on top.

    pip install 'memprox[lightning]' && python examples/lightning_csl.py

The only changes to an ordinary LightningModule: the dataset returns each sample's index
(WithIndex), and training_step returns the per-sample losses and those indices with the loss.
"""

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.integrations import WithIndex
from harness.integrations.lightning import CSLCallback

digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)  # (1797, 64)
y = torch.tensor(digits.target)
rng = np.random.default_rng(0)                              # flip 10% of the labels
flipped = rng.choice(len(y), size=len(y) // 10, replace=False)
y[flipped] = torch.tensor((digits.target[flipped] + rng.integers(1, 10, len(flipped))) % 10)


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

    def training_step(self, batch, batch_idx):
        xb, yb, idx = batch                                 # WithIndex adds the index
        logits = self.net(xb)
        losses = nn.functional.cross_entropy(logits, yb, reduction="none")
        # the loss to minimise, plus what CSLCallback records (logits/labels: the proxies beyond csl)
        return {"loss": losses.mean(), "losses": losses, "indices": idx, "logits": logits, "labels": yb}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


torch.manual_seed(0)
loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=128, shuffle=True)
csl = CSLCallback(len(y), images=digits.images, plot_path="suspects.png", k=20)
trainer = L.Trainer(max_epochs=10, accelerator="cpu", devices=1, callbacks=[csl], logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Classifier(), loader)

scores = csl.scores()                                       # index, label, csl, forgetting, aum, ...
suspects = csl.suspects(k=20)                               # the 20 highest-CSL samples
print(suspects.head())
print(f"flipped labels among the 20 suspects: {np.isin(suspects['index'], flipped).mean():.0%}")
print(f"figure: {csl.figure}")                              # drawn when training ended
