"""The Hugging Face Trainer integration on text classification (a tiny BERT built from a config, a
tokenizer trained in code, no downloads): bitwise the same scores as SampleTracker in a plain loop
on the batches the Trainer drew, the index carried through the padding collator."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("datasets")
sys.path.insert(0, str(Path(__file__).parent))
import _hf_tiny as tiny  # noqa: E402  (sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)

sys.path.pop(0)
import datasets  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)

from harness import SampleTracker  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.integrations.transformers import (  # noqa: E402
    INDEX_KEY,
    CSLTrainer,
    CSLTrainerCallback,
    IndexCollator,
    with_sample_index,
)

N, EPOCHS, BATCH, LR = 48, 2, 8, 0.05
assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = tiny.tokenizer(tmp_path_factory)
    texts, y = tiny.text_corpus(N)
    y[:4] = 1 - y[:4]  # a few wrong labels
    enc = tok(texts, truncation=True, max_length=32)
    train = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                        "label": y.tolist()})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    model = BertForSequenceClassification(config)
    return tok, train, model


def _args(tmp_path, **kw) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS,
                learning_rate=LR, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
                dataloader_num_workers=0)
    return TrainingArguments(**{**base, **kw})


class _Spy(CSLTrainer):
    """Keeps the index batches the Trainer drew, for the plain loop to repeat."""

    def compute_loss(self, model, inputs, **kw):
        if model.training:
            self.batches.append(inputs[INDEX_KEY].clone())
        return super().compute_loss(model, inputs, **kw)


def test_trainer_scores_bitwise_equal_to_plain_loop(setup, tmp_path):
    tok, train, model0 = setup
    model = copy.deepcopy(model0)
    csl = CSLTrainerCallback(N)
    trainer = _Spy(model=model, args=_args(tmp_path), train_dataset=with_sample_index(train), processing_class=tok,
                   callbacks=[csl])
    trainer.batches = []
    trainer.train()
    assert len(trainer.batches) == EPOCHS * N // BATCH
    assert sorted(torch.cat(trainer.batches[: N // BATCH]).tolist()) == list(range(N))  # shuffled, each once

    plain_model = copy.deepcopy(model0)
    plain_model.train()
    opt = torch.optim.SGD(plain_model.parameters(), lr=LR)
    collate = DataCollatorWithPadding(tok)
    tracker = SampleTracker(N)
    per_epoch = N // BATCH
    for epoch in range(EPOCHS):
        for idx in trainer.batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
            batch = collate([train[i] for i in idx.tolist()])
            labels = batch.pop("labels")
            logits = plain_model(**batch).logits
            losses = nn.functional.cross_entropy(logits, labels, reduction="none")
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
            tracker.update(idx, losses=losses, logits=logits, labels=labels)
        tracker.end_epoch()
    got, want = csl.scores(), tracker.scores()
    assert list(got.columns) == list(want.columns) and "csl" in got.columns and "aum" in got.columns
    assert got["label"].equals(want["label"])
    for column in got.columns.drop("label"):
        assert np.array_equal(got[column].to_numpy(), want[column].to_numpy()), column
    assert csl.suspects(4)["index"].tolist() == tracker.suspects(4)["index"].tolist()


def test_torch_dataset_of_dicts_and_evaluation(setup, tmp_path):
    """WithIndex over a torch dataset of dict rows works too, and evaluation (no index) records nothing."""
    tok, train, model0 = setup
    rows = [train[i] for i in range(N)]
    csl = CSLTrainerCallback(N, proxies=["csl"])
    trainer = CSLTrainer(model=copy.deepcopy(model0), args=_args(tmp_path, num_train_epochs=1),
                         train_dataset=with_sample_index(rows), eval_dataset=train, processing_class=tok,
                         callbacks=[csl])
    trainer.train()
    assert "eval_loss" in trainer.evaluate()
    scores = csl.scores()
    assert list(scores.columns) == ["index", "label", "csl"] and (scores["csl"] > 0).all()


def test_clear_errors(setup, tmp_path):
    tok, train, model0 = setup
    with pytest.raises(HarnessError, match="exactly one CSLTrainerCallback"):
        CSLTrainer(model=copy.deepcopy(model0), args=_args(tmp_path), train_dataset=train, processing_class=tok)
    trainer = CSLTrainer(model=copy.deepcopy(model0), args=_args(tmp_path), train_dataset=train,
                         processing_class=tok, callbacks=[CSLTrainerCallback(N)])
    with pytest.raises(HarnessError, match="with_sample_index"):
        trainer.train()
    with pytest.raises(HarnessError, match="already has"):
        with_sample_index(with_sample_index(train))
    from datasets import DatasetDict
    with pytest.raises(HarnessError, match=r"a DatasetDict of splits \['train'\], not one split; pass one: "
                                           r"with_sample_index\(ds\['train'\]\)"):
        with_sample_index(DatasetDict(train=train))


@pytest.mark.parametrize("how", ["keyword", "positional", "loss_func"])
def test_label_smoothing_and_a_loss_function_are_refused_with_a_plain_module_too(tmp_path, how):
    """With a plain nn.Module the Trainer's own code failed first, on `model.config` (an AttributeError
    naming no fix): the refusal now comes before the Trainer looks at the model (integrations audit)."""
    smoothing = _args(tmp_path, label_smoothing_factor=0.1)
    calls = {"keyword": lambda: CSLTrainer(model=_Plain(), args=smoothing, callbacks=[CSLTrainerCallback(4)]),
             "positional": lambda: CSLTrainer(_Plain(), smoothing, callbacks=[CSLTrainerCallback(4)]),
             "loss_func": lambda: CSLTrainer(model=_Plain(), args=_args(tmp_path), callbacks=[CSLTrainerCallback(4)],
                                             compute_loss_func=lambda outputs, labels, **kw: outputs.sum())}
    with pytest.raises(HarnessError, match="drop label_smoothing_factor and compute_loss_func"):
        calls[how]()


def test_index_collator_sets_the_index_aside():
    batch = IndexCollator()([{"x": [1.0], "labels": 0, INDEX_KEY: 5}, {"x": [2.0], "labels": 1, INDEX_KEY: 2}])
    assert batch[INDEX_KEY].tolist() == [5, 2] and batch["x"].shape == (2, 1)


class _Plain(nn.Module):
    """A plain module returning logits: its forward takes no `labels`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("column", ["labels", "label"])
def test_plain_module_keeps_its_label_column(tmp_path, column):
    """remove_unused_columns (on by default) would drop `labels`, which the module's forward does
    not take; CSLTrainer keeps the label columns. With learning rate 0 csl is the initial loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = (x[:, 0] > 0).long()
    train = with_sample_index(datasets.Dataset.from_dict({"x": x.tolist(), column: y.tolist()}).with_format("torch"))
    csl = CSLTrainerCallback(16, proxies=["csl"])
    model = _Plain()
    args = _args(tmp_path, num_train_epochs=1, learning_rate=0.0, remove_unused_columns=True)
    CSLTrainer(model=model, args=args, train_dataset=train, callbacks=[csl]).train()
    want = nn.functional.cross_entropy(_Plain()(x), y, reduction="none").detach().numpy()
    table = csl.scores()
    np.testing.assert_allclose(table["csl"], want, rtol=1e-5)
    assert table["label"].tolist() == y.tolist()


def test_label_names_are_kept_through_remove_unused_columns(tmp_path):
    train = with_sample_index(datasets.Dataset.from_dict({"x": [[0.0] * 4] * 2, "target": [0, 1]}))
    args = _args(tmp_path, label_names=["target"], remove_unused_columns=True)
    trainer = CSLTrainer(model=_Plain(), args=args, train_dataset=train, callbacks=[CSLTrainerCallback(2)])
    trainer._set_signature_columns_if_needed()
    assert {INDEX_KEY, "labels", "label", "target", "x"} <= set(trainer._signature_columns)
