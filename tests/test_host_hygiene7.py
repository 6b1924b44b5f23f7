"""A library that scores samples while you train must not change the training it watches, nor leave
the host process changed: `SampleTracker.eval_epoch` keeps every submodule's mode and the global
RNGs, `run_experiment` restores the caller's torch threads and RNGs, and `CSLTrainer` says when
its loss scaling under gradient accumulation differs from the plain `Trainer`'s."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness import SampleTracker
from harness.integrations import WithIndex

N, D, C = 96, 12, 3


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()


def _net(frozen_bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, C))
    if frozen_bn:
        net[1].eval()  # a frozen BatchNorm inside a training model: its running stats must not move
    return net


def _train(track: bool, eval_data: str, frozen_bn: bool = False, epochs: int = 3) -> nn.Module:
    """A plain loop with a shuffled DataLoader and dropout (both draw from torch's global RNG)."""
    x, y = _data()
    net = _net(frozen_bn)
    torch.manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=32, shuffle=True)
    tracker = SampleTracker(N) if track else None
    for _ in range(epochs):
        for xb, yb, idx in loader:
            logits = net(xb)
            losses = nn.functional.cross_entropy(logits, yb, reduction="none")
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
            if tracker is not None:
                tracker.update(idx, losses=losses, logits=logits, labels=yb)
        if tracker is not None:
            tracker.end_epoch()
            data = (x, y) if eval_data == "tensors" else DataLoader(WithIndex(TensorDataset(x, y)), batch_size=40)
            tracker.eval_epoch(net, data)
    if tracker is not None:
        assert np.isfinite(tracker.scores()["csl_eval"]).all()
    return net


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("eval_data", ["loader", "tensors"])
def test_tracked_training_is_bitwise_the_untracked_one(eval_data):
    """Iterating a DataLoader draws its base seed from torch's global generator: an eval pass over
    a loader after each epoch changed the next epoch's shuffle and dropout masks."""
    assert _same(_train(False, eval_data), _train(True, eval_data))


def test_a_frozen_batchnorm_stays_frozen():
    """`model.train(was_training)` after the eval pass put every submodule in training mode."""
    plain, tracked = _train(False, "tensors", frozen_bn=True), _train(True, "tensors", frozen_bn=True)
    assert [m.training for m in tracked.modules()] == [True, True, False, True, True, True]
    assert _same(plain, tracked)


def test_eval_epoch_restores_modes_and_rngs_also_when_the_model_raises():
    x, y = _data()
    net = _net()
    net.eval()
    net[3].train()  # MC dropout on purpose in a model kept in eval mode
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=net(x).detach(), labels=y)
    tracker.end_epoch()
    modes = [m.training for m in net.modules()]
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()

    def boom(module, args):
        torch.rand(3), np.random.rand(), random.random()  # draws, then fails mid-pass
        raise RuntimeError("boom")

    tracker.eval_epoch(net, DataLoader(WithIndex(TensorDataset(x, y)), batch_size=40, shuffle=True))
    assert [m.training for m in net.modules()] == modes
    handle = net[4].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        tracker.eval_epoch(net, (x, y))
    handle.remove()
    assert [m.training for m in net.modules()] == modes
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


def test_run_experiment_leaves_the_callers_threads_and_rngs(tmp_path):
    """`executor="inprocess"` trains in this process: it set torch's threads to the runs' 1 and
    reseeded torch's generator with the run's seed, under the notebook that called it."""
    from harness.api import run_experiment

    before_threads = torch.get_num_threads()
    torch.set_num_threads(2 if before_threads != 2 else 3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    try:
        result = run_experiment(dataset="digits", proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1],
                                epochs=1, subset=200, device="cpu", bootstrap=0, store=tmp_path / "store",
                                progress=False, executor="inprocess")
        assert result.trained and np.isfinite(result.scores["noise=0.1_seed0"]["csl"]).all()
        assert torch.get_num_threads() == threads
        assert torch.equal(torch.get_rng_state(), states[0])
        assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    finally:
        torch.set_num_threads(before_threads)


@pytest.mark.parametrize("steps", [1, 2])
def test_cslt_trainer_says_when_accumulation_trains_unlike_the_plain_trainer(tmp_path, steps):
    """The plain Trainer left BERT's batch-mean loss undivided under gradient accumulation (its
    forward takes **kwargs), CSLTrainer divides it: the same args trained at 1/steps the update,
    silently (checked bitwise: CSLTrainer with steps x the learning rate trains as the Trainer)."""
    pytest.importorskip("transformers")
    import warnings

    import datasets
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

    model = BertForSequenceClassification(BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8, num_labels=2))
    train = with_sample_index(datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 4, "label": [0, 1, 0, 1]}))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_accumulation_steps=steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CSLTrainer(model=model, args=args, train_dataset=train, callbacks=[CSLTrainerCallback(4)])
    said = [str(w.message) for w in caught if "gradient_accumulation_steps" in str(w.message)]
    assert len(said) == (steps > 1)
    if steps > 1:
        assert "multiply learning_rate by 2" in said[0]


def _epoch(tracker: SampleTracker, net: nn.Module, seed: int, crash_at: int | None = None) -> None:
    x, y = _data()
    order = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    for b, idx in enumerate(order.split(32)):
        if b == crash_at:
            raise RuntimeError("a bug in the user's loop")
        logits = net(x[idx]) * (1 + seed + b)  # each attempt's losses differ
        tracker.update(idx, logits=logits.detach(), labels=y[idx])
    tracker.end_epoch()


def test_a_loop_that_raised_mid_epoch_reruns_it_after_discard_epoch():
    """Rerunning the epoch kept the failed attempt's losses (each sample's first presentation);
    scores() said only "call end_epoch()", which would sum the half epoch as a whole one."""
    from harness.errors import HarnessError

    net = _net().eval()
    tracker, reference = SampleTracker(N), SampleTracker(N)
    _epoch(tracker, net, 0)
    _epoch(reference, net, 0)
    with pytest.raises(RuntimeError, match="bug"):
        _epoch(tracker, net, 5, crash_at=2)
    with pytest.raises(HarnessError, match="discard_epoch"):
        tracker.finish()
    tracker.discard_epoch()
    _epoch(tracker, net, 1)
    _epoch(reference, net, 1)
    got, want = tracker.scores(), reference.scores()
    assert tracker.epochs == 2 and list(got.columns) == list(want.columns)
    for column in got.columns.drop("label"):
        assert np.array_equal(got[column].to_numpy(), want[column].to_numpy()), column


def test_lightning_fit_that_raises_mid_epoch_keeps_only_whole_epochs():
    pytest.importorskip("lightning")
    import lightning as L

    from harness.integrations.lightning import CSLCallback

    class Crashing(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1 and batch_idx == 2:
                raise RuntimeError("a bug in training_step")
            xb, yb, idx = batch
            losses = nn.functional.cross_entropy(self.net(xb), yb, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    csl = CSLCallback(N)
    trainer = L.Trainer(max_epochs=3, callbacks=[csl], accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(RuntimeWarning, match="dropped from the record, which holds the 1 completed"):
        with pytest.raises(RuntimeError, match="a bug in training_step"):
            trainer.fit(Crashing(), DataLoader(WithIndex(TensorDataset(x, y)), batch_size=16))
    assert csl.tracker.epochs_presented().tolist() == [1] * N  # not 2 for the 32 samples of the half epoch
    assert np.isfinite(csl.scores()["csl"]).all()


def test_cslt_trainer_that_raises_mid_epoch_keeps_only_whole_epochs(tmp_path):
    pytest.importorskip("transformers")
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

    class Crashing(CSLTrainer):
        def compute_loss(self, model, inputs, **kw):
            if self.state.global_step == 6:  # epoch 2 of 4 steps each, after 2 of its steps
                raise RuntimeError("a bug in the training step")
            return super().compute_loss(model, inputs, **kw)

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8, num_labels=2))
    train = with_sample_index(datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 8, "label": [0, 1] * 4}))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=2,
                             num_train_epochs=3, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    csl = CSLTrainerCallback(8)
    with pytest.warns(RuntimeWarning, match="dropped from the record, which holds the 1 completed"):
        with pytest.raises(RuntimeError, match="a bug in the training step"):
            Crashing(model=model, args=args, train_dataset=train, callbacks=[csl]).train()
    assert csl.tracker.epochs_presented().tolist() == [1] * 8
