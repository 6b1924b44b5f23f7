"""CSLCallback in a Lightning fit users write (tracker29): bf16-mixed autocast on the CPU, gradient
accumulation, a WeightedRandomSampler with replacement and drop_last=True, the model switched to eval
mode for some batches: every training-pass proxy against a float64 hand computation from the
training_step's own losses and logits, each sample's first presentation of every epoch."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

L = pytest.importorskip("lightning")

from harness.integrations import WithIndex  # noqa: E402
from harness.integrations.lightning import CSLCallback  # noqa: E402

N, C, EPOCHS = 61, 3, 4


class _Seen:
    """Each epoch's first presentation of each sample: (loss, logits row, label), as the loop computed them."""

    def __init__(self) -> None:
        self.epochs: list[dict[int, tuple[float, torch.Tensor, int]]] = [{}]

    def add(self, idx: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for j, i in enumerate(idx.tolist()):
            self.epochs[-1].setdefault(i, (float(losses[j]), logits[j].detach().double(), int(labels[j])))

    def proxies(self) -> dict[str, np.ndarray]:
        epochs = [e for e in self.epochs if e]
        loss, margin, correct, p_label, el2n = (np.full((len(epochs), N), np.nan) for _ in range(5))
        for e, seen in enumerate(epochs):
            for i, (value, row, y) in seen.items():
                other = torch.cat([row[:y], row[y + 1:]]).max()
                p = torch.softmax(row, 0)
                loss[e, i], margin[e, i], correct[e, i] = value, float(row[y] - other), float(row[y] > other)
                p_label[e, i] = float(p[y])
                el2n[e, i] = float((p - F.one_hot(torch.tensor(y), C).double()).norm())
        forgetting = np.full(N, np.nan)
        for i in range(N):
            c = correct[:, i][~np.isnan(correct[:, i])]
            if len(c):
                forgetting[i] = len(epochs) if not c.any() else np.sum((c[:-1] > 0.5) & (c[1:] <= 0.5))
        window = min(len(epochs), max(1, math.floor(0.1 * len(epochs) + 0.5)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # never-presented samples: NaN, as the tracker's
            return {"csl": np.nansum(loss, 0), "aum": -np.nanmean(margin, 0), "forgetting": forgetting,
                    "variability": np.nanstd(p_label, 0), "el2n": np.nanmean(el2n[:window], 0)}


class _Module(L.LightningModule):
    def __init__(self, seen: _Seen) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, C))
        self.seen = seen

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        self.net.train(batch_idx % 3 != 2)  # some batches in eval mode
        logits = self.net(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        self.seen.add(idx, losses, logits, y)
        return {"loss": losses.mean(), "losses": losses, "indices": idx.int(), "logits": logits, "labels": y}

    def on_train_epoch_end(self) -> None:
        self.seen.epochs.append({})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_a_bf16_fit_with_accumulation_and_a_sampler_with_replacement_scores_as_by_hand() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(N, 6), torch.randint(0, C, (N,))
    sampler = WeightedRandomSampler(torch.rand(N), N, replacement=True, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=8, sampler=sampler, drop_last=True)
    seen, csl = _Seen(), CSLCallback(N)
    trainer = L.Trainer(max_epochs=EPOCHS, callbacks=[csl], accelerator="cpu", precision="bf16-mixed",
                        accumulate_grad_batches=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_Module(seen), loader)
        scores = csl.scores()
    hand = seen.proxies()
    assert csl.tracker.epochs == EPOCHS
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), (~np.isnan([[e.get(i, (np.nan,))[0] for i in range(N)]
                                                                         for e in seen.epochs if e])).sum(0))
    np.testing.assert_array_equal(scores["csl"].to_numpy(), hand["csl"])  # the step's own losses, summed in float64
    np.testing.assert_array_equal(np.isnan(scores["forgetting"].to_numpy()), np.isnan(hand["forgetting"]))
    np.testing.assert_array_equal(scores["forgetting"].to_numpy(), hand["forgetting"])
    for proxy in ("aum", "variability", "el2n"):  # float32 signals against float64 ones of bf16 logits
        np.testing.assert_allclose(scores[proxy].to_numpy(), hand[proxy], rtol=1e-5, atol=1e-6, err_msg=proxy)
