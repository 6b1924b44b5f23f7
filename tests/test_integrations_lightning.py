"""The Lightning callback records what a plain loop hands to SampleTracker: bitwise the same scores
on the same batches, in one process and gathered over 2 DDP processes (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")
import lightning as L  # noqa: E402

from harness import SampleTracker  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.integrations import WithIndex  # noqa: E402
from harness.integrations.lightning import CSLCallback  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent
N, D, C, BATCH, EPOCHS = 96, 12, 3, 32, 3
TRAINER = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    y[:8] = (y[:8] + 1) % C  # a few wrong labels
    return x, y


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))


def _loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    gen = torch.Generator().manual_seed(1)  # shuffled, in the same order for both loops
    return DataLoader(WithIndex(TensorDataset(x, y)), batch_size=BATCH, shuffle=True, generator=gen)


class Module(L.LightningModule):
    def __init__(self, net: nn.Module, logits: bool) -> None:
        super().__init__()
        self.net, self.with_logits = net, logits
        self.batches: list[torch.Tensor] = []  # the batches trained on, for the plain loop to repeat

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        self.batches.append(idx.clone())
        logits = self.net(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        out = {"loss": losses.mean(), "losses": losses, "indices": idx}
        if self.with_logits:
            out.update(logits=logits, labels=y)
        return out

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)


def _plain(logits: bool, batches: list[torch.Tensor]) -> SampleTracker:
    """The README's plain loop, on the batches Lightning drew (Lightning iterates the loader once
    more than a bare loop does, so the same seeded loader would not give the same later epochs)."""
    x, y = _data()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    tracker = SampleTracker(N)
    per_epoch = len(batches) // EPOCHS
    for epoch in range(EPOCHS):
        for idx in batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
            xb, yb = x[idx], y[idx]
            out = net(xb)
            loss = nn.functional.cross_entropy(out, yb, reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            tracker.update(idx, losses=loss, logits=out if logits else None, labels=yb if logits else None)
        tracker.end_epoch()
    return tracker


@pytest.mark.parametrize("logits", [False, True], ids=["losses", "losses+logits"])
def test_callback_scores_bitwise_equal_to_plain_loop(logits):
    x, y = _data()
    csl = CSLCallback(N)
    module = Module(_net(), logits)
    L.Trainer(max_epochs=EPOCHS, callbacks=[csl], **TRAINER).fit(module, _loader(x, y))
    assert len(module.batches) == EPOCHS * N // BATCH
    plain = _plain(logits, module.batches)
    got, want = csl.scores(), plain.scores()
    assert list(got.columns) == list(want.columns)
    assert ("aum" in got.columns) == logits
    assert got["label"].equals(want["label"])
    for column in got.columns.drop("label"):
        assert np.array_equal(got[column].to_numpy(), want[column].to_numpy()), column
    assert csl.suspects(5)["index"].tolist() == plain.suspects(5)["index"].tolist()


def test_suspects_figure_at_train_end(tmp_path):
    x, y = _data()
    images = np.random.default_rng(0).integers(0, 255, (N, 8, 8), dtype=np.uint8)
    csl = CSLCallback(N, images=images, plot_path=tmp_path / "suspects.png", k=8)
    L.Trainer(max_epochs=1, callbacks=[csl], **TRAINER).fit(Module(_net(), False), _loader(x, y))
    assert csl.figure == tmp_path / "suspects.png" and csl.figure.stat().st_size > 0


class _NoIndices(Module):
    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        return nn.functional.cross_entropy(self.net(x), y)


def test_training_step_without_the_contract_says_what_to_return():
    x, y = _data()
    with pytest.raises(HarnessError, match='"losses": losses, "indices": idx'):
        L.Trainer(max_epochs=1, callbacks=[CSLCallback(N)], **TRAINER).fit(_NoIndices(_net(), False), _loader(x, y))
    with pytest.raises(HarnessError, match="needs images"):
        CSLCallback(N, plot_path="x.png")


def test_with_index_wraps_tuples_and_dicts():
    assert WithIndex([(1, 2)])[0] == (1, 2, 0)
    assert WithIndex([{"a": 1}])[0] == {"a": 1, "sample_index": 0}
    with pytest.raises(HarnessError, match="already"):
        WithIndex([{"sample_index": 1}])[0]


def test_ddp_two_processes_equal_one_process(tmp_path):
    """Lightning's own DDP (strategy="ddp", 2 CPU processes, gloo) against the plain loop and a
    1-device Lightning run on the same global batches of 16 (see tests/_lightning_ddp.py)."""
    sys.path.insert(0, str(HERE))
    try:
        import _lightning_ddp as job
    finally:
        sys.path.remove(str(HERE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, str(HERE / "_lightning_ddp.py"), "2", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [np.load(f"{out}.rank{r}.npz") for r in (0, 1)]

    one = job.run(1, 16).scores()
    x, y = job.data()
    model = job.init_model()
    opt = torch.optim.SGD(model.parameters(), lr=job.LR)
    plain = SampleTracker(job.N)
    for _ in range(job.EPOCHS):
        for xb, yb, idx in DataLoader(WithIndex(TensorDataset(x, y)), batch_size=16):
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb, reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            plain.update(idx, losses=loss, logits=logits, labels=yb)
        plain.end_epoch()
    want = plain.scores()
    assert np.ptp(want["csl"]) > 0  # the model learned: not a trivially constant score
    for column in ("csl", "aum", "forgetting", "el2n"):
        assert np.array_equal(one[column].to_numpy(), want[column].to_numpy()), column
        for r, got in enumerate(ranks):
            assert np.array_equal(got[column], want[column].to_numpy()), (column, r)


def test_gather_uneven_batches_and_padding_duplicates(tmp_path):
    """The recorder's gather in isolation: unequal batch sizes across ranks, and a sample repeated as
    padding keeps its first loss of the epoch."""
    import torch.multiprocessing as mp

    sys.path.insert(0, str(HERE))
    try:
        from _gather_worker import gather_worker  # a light module: each spawned process imports it
    finally:
        sys.path.remove(str(HERE))
    out = str(tmp_path / "csl.npy")
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(gather_worker, args=(2, init, out), nprocs=2, join=True)
    np.testing.assert_array_equal(np.load(out), np.arange(1.0, 8.0) * 3)  # 1x + 2x each loss, no 100


def test_a_second_fit_of_another_model_warns_that_it_adds_to_the_first_ones_record():
    """The callback continues its record across fits (right for the same model trained on); another
    model's losses silently added to the first one's, csl summing two trainings."""
    import warnings

    x, y = _data()
    csl = CSLCallback(N)
    module = Module(_net(), False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        L.Trainer(max_epochs=1, callbacks=[csl], **TRAINER).fit(module, _loader(x, y))
        L.Trainer(max_epochs=1, callbacks=[csl], **TRAINER).fit(module, _loader(x, y))  # the same model, on
    with pytest.warns(RuntimeWarning, match="this fit trains another model than the fit before"):
        L.Trainer(max_epochs=1, callbacks=[csl], **TRAINER).fit(Module(_net(), False), _loader(x, y))
