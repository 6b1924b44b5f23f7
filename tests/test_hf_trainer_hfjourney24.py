"""A data-quality engineer's text fine-tuning with `CSLTrainer` (found by a walkthrough of the docs on
400 templated reviews with a `topic` label column): CSL is the sum of the per-sample losses the
training saw, recomputed here from the weights at each epoch's start; and the inputs she was likely to
get wrong (a DatasetDict for a split, a callback sized by `len` of that DatasetDict, a label column not
called `label`, string labels, unlabeled rows, too few model outputs) failed inside the collator or in
`cross_entropy` ("Unable to create tensor", "Target 2 is out of bounds", "Invalid key: 0"), naming
none of them; each now stops when the trainer is built, naming the fix."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

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
    TrainerCallback,
    TrainingArguments,
)

from harness.errors import HarnessError  # noqa: E402
from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index  # noqa: E402

NAMES = ["neg", "pos", "meh"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Any:
    return tiny.tokenizer(tmp_path_factory)


def _reviews(tok: Any, n: int = 16, *, label: str = "topic") -> Any:
    """Her data as she tokenizes it: a text column, a ClassLabel column not named `label`."""
    texts, y = tiny.text_corpus(n)
    y[:2] = 2  # a third class
    features = datasets.Features({"review": datasets.Value("string"), label: datasets.ClassLabel(names=NAMES)})
    ds = datasets.Dataset.from_dict({"review": texts, label: y.tolist()}, features=features)
    return ds.map(lambda rows: tok(rows["review"], truncation=True, max_length=32), batched=True)


def _model(tok: Any, num_labels: int = 3) -> Any:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=num_labels))


def _args(tmp_path: Path, **kw: Any) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=8, use_cpu=True,
                report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
    return TrainingArguments(**{**base, **kw})


def _build_and_train(tok: Any, tmp_path: Path, train: Any, n: int | None = None, num_labels: int = 3,
                     **kw: Any) -> CSLTrainerCallback:
    csl = CSLTrainerCallback(len(train) if n is None else n)
    CSLTrainer(model=_model(tok, num_labels), args=_args(tmp_path, **kw), train_dataset=train,
               processing_class=tok, callbacks=[csl]).train()
    return csl


class _Weights(TrainerCallback):
    """The model's weights at each epoch's start: the weights every loss of that epoch was computed with
    (one batch per epoch)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_epoch_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.states.append(copy.deepcopy(model.state_dict()))


def test_csl_is_the_sum_of_the_losses_the_training_saw(tok, tmp_path) -> None:
    """Recomputed independently of the tracker: each epoch's per-sample cross-entropy from that epoch's
    starting weights (one batch of all 8 samples per epoch, no dropout), summed over the 3 epochs."""
    train = with_sample_index(_reviews(tok, 8).remove_columns("review"))
    weights = _Weights()
    csl = CSLTrainerCallback(len(train))
    model = _model(tok)
    CSLTrainer(model=model, args=_args(tmp_path, num_train_epochs=3, learning_rate=0.05, label_names=["topic"]),
               train_dataset=train, processing_class=tok, callbacks=[csl, weights]).train()
    assert len(weights.states) == 3
    rows = [{k: train[i][k] for k in ("input_ids", "attention_mask")} for i in range(8)]
    batch = DataCollatorWithPadding(tok)(rows)
    labels = torch.tensor(train["topic"])
    hand = torch.zeros(8, dtype=torch.float64)
    probe = _model(tok)
    for state in weights.states:
        probe.load_state_dict(state)
        with torch.no_grad():
            logits = probe(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hand += torch.nn.functional.cross_entropy(logits, labels, reduction="none").double()
    scores = csl.scores().set_index("index").sort_index()
    assert scores.index.tolist() == list(range(8))
    assert not np.allclose(hand[0].item() * np.ones(8), hand.numpy())  # the samples' sums differ: a real check
    np.testing.assert_allclose(scores["csl"].to_numpy(), hand.numpy(), rtol=1e-5, atol=1e-6)
    assert scores["label"].tolist() == train["topic"]


def test_a_datasetdict_is_refused_naming_the_split(tok, tmp_path) -> None:
    ds = _reviews(tok)
    both = datasets.DatasetDict({"train": ds, "test": ds})
    with pytest.raises(HarnessError, match=r"train_dataset is a DatasetDict of splits \['train', 'test'\], not "
                                           r"one split; pass the training split: "
                                           r"train = with_sample_index\(ds\['train'\]\)"):
        _build_and_train(tok, tmp_path, both, label_names=["topic"])
    with pytest.raises(HarnessError, match=r"with_sample_index: a DatasetDict of splits \['train', 'test'\], not one "
                                           r"split; pass one: with_sample_index\(ds\['train'\]\)"):
        with_sample_index(both)  # the step before: refused there already


def test_a_callback_sized_for_another_dataset_is_refused(tok, tmp_path) -> None:
    train = with_sample_index(_reviews(tok))
    with pytest.raises(HarnessError, match=r"CSLTrainerCallback was made for 2 samples but train_dataset has 16 rows; "
                                           r"make it with CSLTrainerCallback\(len\(train_dataset\)\)"):
        _build_and_train(tok, tmp_path, train, n=2, label_names=["topic"])


@pytest.mark.parametrize("label_names", [None, ["topc"]])
def test_a_label_column_of_another_name_is_named(tok, tmp_path, label_names) -> None:
    train = with_sample_index(_reviews(tok))
    with pytest.raises(HarnessError, match=r"train_dataset has no label column \(looked for .*'labels', 'label'\]; "
                                           r"it has columns \['review', 'topic', .*\]\); name yours with "
                                           r"TrainingArguments\(label_names=\[COLUMN\]\)"):
        _build_and_train(tok, tmp_path, train, label_names=label_names)


def test_string_labels_are_refused_with_class_encode_column(tok, tmp_path) -> None:
    ds = _reviews(tok)
    features = ds.features.copy()
    features["topic"] = datasets.Value("string")
    strings = ds.map(lambda row: {"topic": NAMES[row["topic"]]}, features=features)  # her labels as names
    assert set(strings["topic"]) == set(NAMES)
    with pytest.raises(HarnessError, match=r"label column 'topic' holds strings, not class ids; encode them with "
                                           r"dataset = dataset.class_encode_column\('topic'\)"):
        _build_and_train(tok, tmp_path, with_sample_index(strings), label_names=["topic"])


def test_unlabeled_rows_are_named(tok, tmp_path) -> None:
    ds = _reviews(tok).cast_column("topic", datasets.Value("int64"))
    ds = ds.map(lambda row, i: {"topic": -1 if i in (3, 9) else row["topic"]}, with_indices=True)
    with pytest.raises(HarnessError, match=r"label column 'topic' has class id -1 in 2 row\(s\) \(first: \[3, 9\]\); "
                                           r"unlabeled rows .* drop them first, dataset.filter"):
        _build_and_train(tok, tmp_path, with_sample_index(ds), label_names=["topic"])


def test_too_few_model_outputs_are_named(tok, tmp_path) -> None:
    with pytest.raises(HarnessError, match=r"label column 'topic' holds class id 2, but the model has num_labels=2 "
                                           r"outputs; make the model with num_labels=3 \(its ClassLabel's names\)"):
        _build_and_train(tok, tmp_path, with_sample_index(_reviews(tok)), num_labels=2, label_names=["topic"])


def test_a_torch_dataset_with_a_class_beyond_the_outputs_is_named(tok, tmp_path) -> None:
    """Rows that are not a datasets.Dataset are checked per batch: cross_entropy's IndexError is named."""
    ds = _reviews(tok)
    rows = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"], "labels": r["topic"]} for r in ds]
    with pytest.raises(HarnessError, match=r"the batch's labels run from 0 to 2, but the model has 2 outputs \(class "
                                           r"ids 0..1\); drop unlabeled rows \(-1\) and make the model with "
                                           r"num_labels = the number of classes"):
        _build_and_train(tok, tmp_path, with_sample_index(rows), num_labels=2, per_device_train_batch_size=16)


def test_an_index_added_before_a_filter_is_refused(tok, tmp_path) -> None:
    """Ids beyond the rows left: before, "sample index 13 is outside [0, 11)", which named no filter."""
    train = with_sample_index(_reviews(tok)).filter(lambda row: row["topic"] != 1)
    assert max(train["sample_index"]) >= len(train)
    with pytest.raises(HarnessError, match=rf"the 'sample_index' column does not number the {len(train)} rows "
                                           rf"0..{len(train) - 1} once each \(it runs from 0 to \d+, 0 id\(s\) "
                                           r"repeated\): add it last, after any filter, select or concatenate"):
        _build_and_train(tok, tmp_path, train, label_names=["topic"])


def test_indexed_parts_concatenated_are_refused(tok, tmp_path) -> None:
    """Ids repeated: before, the tracker's "labels ... other than an earlier update() gave them"."""
    ds = _reviews(tok)
    train = datasets.concatenate_datasets([with_sample_index(ds.select(range(8))),
                                           with_sample_index(ds.select(range(8, 16)))])
    with pytest.raises(HarnessError, match=r"does not number the 16 rows 0..15 once each \(it runs from 0 to 7, 8 "
                                           r"id\(s\) repeated\)"):
        _build_and_train(tok, tmp_path, train, label_names=["topic"])
