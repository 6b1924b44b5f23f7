"""CSLTrainer under the Trainer's own samplers and batching (atthint30): train_sampling_strategy="group_by_length" (a
LengthGroupedSampler), dataloader_drop_last=True and gradient accumulation with a short last group.
The scores are held bitwise to a plain SampleTracker fed the micro-batches the Trainer drew, with the
logits its model gave, and forgetting to a hand count; no repeat warning (each epoch presents 40 of
the 46 samples once, 6 others left out each epoch by drop_last)."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path
from typing import Any

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
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments  # noqa: E402

from harness import SampleTracker  # noqa: E402
from harness.integrations.transformers import INDEX_KEY, CSLTrainer, CSLTrainerCallback, with_sample_index  # noqa: E402

N, EPOCHS, BATCH = 46, 3, 8  # 5 whole batches an epoch (6 samples dropped), accumulation groups of 2, 2 and 1


class _Spy(CSLTrainer):
    """Keeps each training micro-batch's indices, labels and the logits the model gives it (dropout is 0:
    the same forward as the Trainer's)."""

    def compute_loss(self, model: Any, inputs: Any, **kw: Any) -> Any:
        if model.training:
            with torch.no_grad():
                plain = {k: v for k, v in inputs.items() if k not in (INDEX_KEY, "labels")}
                self.seen.append((inputs[INDEX_KEY].clone(), model(**plain).logits.clone(), inputs["labels"].clone()))
        return super().compute_loss(model, inputs, **kw)


def test_group_by_length_drop_last_and_accumulation_score_as_the_batches_drawn(tmp_path_factory: Any) -> None:
    tok = tiny.tokenizer(tmp_path_factory)
    texts, y = tiny.text_corpus(N)
    enc = tok(texts, truncation=True, max_length=32)
    train = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                        "label": y.tolist()})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    model = BertForSequenceClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("out")), per_device_train_batch_size=BATCH,
                             num_train_epochs=EPOCHS, learning_rate=0.05, optim="sgd", lr_scheduler_type="constant",
                             weight_decay=0.0, max_grad_norm=0.0, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
                             train_sampling_strategy="group_by_length", dataloader_drop_last=True,
                             gradient_accumulation_steps=2)
    csl = CSLTrainerCallback(N)
    trainer = _Spy(model=copy.deepcopy(model), args=args, train_dataset=with_sample_index(train), processing_class=tok,
                   callbacks=[csl])
    trainer.seen = []
    assert type(trainer._get_train_sampler()).__name__ == "LengthGroupedSampler"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "presented more than once" in str(w.message)]
    per_epoch = N // BATCH
    assert len(trainer.seen) == EPOCHS * per_epoch and {len(i) for i, _, _ in trainer.seen} == {BATCH}
    epochs = [trainer.seen[e * per_epoch:(e + 1) * per_epoch] for e in range(EPOCHS)]
    for epoch in epochs:  # each epoch: 40 distinct samples
        assert len(set(torch.cat([i for i, _, _ in epoch]).tolist())) == per_epoch * BATCH

    tracker = SampleTracker(N)
    for epoch in epochs:
        for idx, logits, labels in epoch:
            tracker.update(idx, logits=logits, labels=labels)
        tracker.end_epoch()
    got, want = csl.scores(), tracker.scores()
    assert list(got.columns) == list(want.columns)
    for column in got.columns.drop("label"):
        assert np.array_equal(got[column].to_numpy(), want[column].to_numpy(), equal_nan=True), column

    # by hand: csl in float64, forgetting as the spec counts it (correct then wrong; never correct: E)
    loss, correct = np.full((EPOCHS, N), np.nan), np.full((EPOCHS, N), np.nan)
    for e, epoch in enumerate(epochs):
        for idx, logits, labels in epoch:
            ce = nn.functional.cross_entropy(logits.double(), labels, reduction="none").numpy()
            right = (logits.argmax(1) == labels).numpy()
            loss[e, idx.numpy()], correct[e, idx.numpy()] = ce, right
    np.testing.assert_allclose(got["csl"].to_numpy(), np.nansum(loss, 0), rtol=1e-6)
    forgetting = np.full(N, np.nan)
    for i in range(N):
        c = correct[:, i][~np.isnan(correct[:, i])]
        if len(c):
            forgetting[i] = EPOCHS if not c.any() else np.sum((c[:-1] > 0.5) & (c[1:] <= 0.5))
    np.testing.assert_array_equal(got["forgetting"].to_numpy(), forgetting)
