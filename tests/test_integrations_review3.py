"""Review of the trainer integrations (third pass): evaluation with a plain module or a tuple output,
a label column named by `label_names`, a model without logits, a run stopped mid-epoch by
`max_steps` and resumed from its epoch-end checkpoint, and the messages of a callback that recorded
nothing here (a spawned DDP fit) or whose record `scores()` ended."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import HarnessError

N, BATCH = 16, 4
_G = torch.Generator().manual_seed(0)
X = torch.randn(N, 4, generator=_G)
Y = (X[:, 0] > 0).long()


def _hf():
    pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    sys.path.insert(0, str(Path(__file__).parent))
    import _hf_tiny  # noqa: F401  (offline)

    sys.path.pop(0)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    return datasets


class _Plain(nn.Module):
    """Returns logits as a tensor (or a one-tuple); its forward takes no labels."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.as_tuple = nn.Linear(4, 2), as_tuple

    def forward(self, x):
        logits = self.linear(x)
        return (logits,) if self.as_tuple else logits


class _LossOnly(_Plain):
    def forward(self, x):
        return {"loss": self.linear(x).square().mean()}


def _args(tmp_path, name: str, **kw):
    from transformers import TrainingArguments

    base = dict(output_dir=str(tmp_path / name), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
                num_train_epochs=1, learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", use_cpu=True,
                report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
                dataloader_num_workers=0)
    return TrainingArguments(**{**base, **kw})


def _dataset(datasets, label: str = "label"):
    return datasets.Dataset.from_dict({"x": X.tolist(), label: Y.tolist()}).with_format("torch")


@pytest.mark.parametrize("as_tuple", [False, True], ids=["tensor", "tuple"])
def test_evaluation_of_a_plain_module_gives_every_prediction(tmp_path, as_tuple):
    """A plain module's eval batches went to forward with `labels` (TypeError: the Trainer found no
    label argument), and with label_names set the Trainer read the output as (loss, logits...):
    a tensor lost its first row per batch (12 predictions of 16), a one-tuple gave none."""
    datasets = _hf()
    from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

    ds = _dataset(datasets)
    model = _Plain(as_tuple)
    trainer = CSLTrainer(model=model, args=_args(tmp_path, "eval"), train_dataset=with_sample_index(ds),
                         eval_dataset=ds, callbacks=[CSLTrainerCallback(N)])
    trainer.train()
    out = trainer.predict(ds)
    with torch.no_grad():
        logits = model.linear(X)
    assert out.predictions.shape == (N, 2)
    np.testing.assert_allclose(out.predictions, logits.numpy(), atol=1e-6)
    assert out.label_ids.tolist() == Y.tolist()
    want = nn.functional.cross_entropy(logits, Y).item()
    assert out.metrics["test_loss"] == pytest.approx(want, rel=1e-5)
    indexed = trainer.predict(with_sample_index(ds))  # the training set itself: the index is set aside
    np.testing.assert_allclose(indexed.predictions, logits.numpy(), atol=1e-6)


def test_label_column_named_by_label_names(tmp_path):
    """label_names=["target"] kept the column through remove_unused_columns, but compute_loss read
    only `labels`/`label` and refused the batch ("the batch has no labels")."""
    datasets = _hf()
    from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

    csl = CSLTrainerCallback(N, proxies=["csl"])
    args = _args(tmp_path, "target", learning_rate=0.0, label_names=["target"])
    CSLTrainer(model=_Plain(), args=args, train_dataset=with_sample_index(_dataset(datasets, "target")),
               callbacks=[csl]).train()
    with torch.no_grad():
        want = nn.functional.cross_entropy(_Plain()(X), Y, reduction="none").numpy()
    table = csl.scores()
    np.testing.assert_allclose(table["csl"], want, rtol=1e-6)
    assert table["label"].tolist() == Y.tolist()


def test_a_model_without_logits_is_refused_with_a_message(tmp_path):
    """Was a bare KeyError: 'logits'."""
    datasets = _hf()
    from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

    trainer = CSLTrainer(model=_LossOnly(), args=_args(tmp_path, "loss"), train_dataset=with_sample_index(
        _dataset(datasets)), callbacks=[CSLTrainerCallback(N)])
    with pytest.raises(HarnessError, match=r"output has no logits \(keys \['loss'\]\)"):
        trainer.train()


def test_resumed_from_the_checkpoint_of_a_run_stopped_mid_epoch(tmp_path):
    """max_steps=6 stops in epoch 1 (4 steps an epoch); save_strategy="epoch" saves after on_epoch_end,
    which closed the half epoch, so the run resumed with max_steps=8 recorded 3 epochs (epoch 1 in
    two parts): aum, el2n, forgetting... differed from the uninterrupted run's, with a warning about
    samples presented in fewer than all 3 epochs."""
    datasets = _hf()
    from harness.integrations.transformers import STATE_FILE, CSLTrainer, CSLTrainerCallback, with_sample_index

    train = with_sample_index(_dataset(datasets))

    def run(name: str, steps: int, resume: Path | None = None, csl=None):
        csl = csl or CSLTrainerCallback(N)
        args = _args(tmp_path, name, max_steps=steps, save_strategy="epoch")
        CSLTrainer(model=_Plain(), args=args, train_dataset=train, callbacks=[csl]).train(
            resume_from_checkpoint=None if resume is None else str(resume))
        return csl

    full = run("full", 8)
    want = full.scores()
    cut = run("cut", 6)
    assert (tmp_path / "cut" / "checkpoint-6" / STATE_FILE).is_file()
    assert cut.scores()["csl"].tolist() != want["csl"].tolist()  # the cut run scores its 1.5 epochs
    resumed = run("resumed", 8, tmp_path / "cut" / "checkpoint-6")
    assert resumed.tracker.epochs == 2
    assert resumed.scores().equals(want)
    again = run("again", 6)  # the same callback: a fresh train() closes the half epoch first
    run("again2", 4, csl=again)
    assert again.tracker.epochs == 3


def test_trainer_callback_after_scores_says_to_use_a_new_one(tmp_path):
    datasets = _hf()
    from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

    csl = CSLTrainerCallback(N)
    train = with_sample_index(_dataset(datasets))
    CSLTrainer(model=_Plain(), args=_args(tmp_path, "a"), train_dataset=train, callbacks=[csl]).train()
    csl.scores()
    with pytest.raises(HarnessError, match="new CSLTrainerCallback"):
        CSLTrainer(model=_Plain(), args=_args(tmp_path, "b"), train_dataset=train, callbacks=[csl]).train()


def test_lightning_callback_without_a_record_names_spawned_fits():
    """A fit with strategy="ddp_spawn" (or "ddp_notebook") records in its own processes and the
    callback in the caller's process stays empty: scores() said "call update() for every batch"."""
    pytest.importorskip("lightning")
    from harness.integrations.lightning import CSLCallback

    with pytest.raises(HarnessError, match="ddp_spawn"):
        CSLCallback(N).scores()


def test_lightning_callback_after_scores_says_to_use_a_new_one():
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from harness.integrations import WithIndex
    from harness.integrations.lightning import CSLCallback

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Plain()

        def training_step(self, batch, batch_idx):
            x, y, idx = batch
            losses = nn.functional.cross_entropy(self.net(x), y, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(csl: CSLCallback) -> None:
        L.Trainer(max_epochs=1, callbacks=[csl], accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False).fit(
            Module(), DataLoader(WithIndex(TensorDataset(X, Y)), batch_size=BATCH))

    csl = CSLCallback(N)
    fit(csl)
    assert csl.scores()["csl"].gt(0).all()
    with pytest.raises(HarnessError, match="new CSLCallback"):
        fit(csl)
