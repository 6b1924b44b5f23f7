"""Valid Hugging Face setups that `CSLTrainer`'s build-time data checks (4239052) refused or slowed
(attack24): a `set_transform` that makes the labels, a collator of the user's own that maps them
(strings to ids, ratings 1..3 to 0..2), a head of the user's own on a config whose `num_labels`
is the default 2, a streaming dataset whose features are known, and a million rows (the label
column was read row by row in Python, ~400 calls a row). Each trains as before the checks; what
the checks are for is still refused."""

from __future__ import annotations

import cProfile
import pstats
import sys
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
from transformers import (  # noqa: E402
    BertConfig,
    BertForMultipleChoice,
    BertForSequenceClassification,
    BertForTokenClassification,
    DataCollatorWithPadding,
    PretrainedConfig,
    PreTrainedModel,
    TrainingArguments,
)

from harness.errors import HarnessError  # noqa: E402
from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index  # noqa: E402

NAMES = ["neg", "pos", "meh"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Any:
    return tiny.tokenizer(tmp_path_factory)


def _data(tok: Any, label: str = "label") -> Any:
    """16 tokenized rows, integer labels 0..2 (0 and 1 from the corpus, the first two rows 2)."""
    texts, y = tiny.text_corpus(16)
    y[:2] = 2
    ds = datasets.Dataset.from_dict({"review": texts, label: y.tolist()})
    return ds.map(lambda rows: tok(rows["review"], truncation=True, max_length=32), batched=True,
                  remove_columns=["review"])


def _config(tok: Any, **kw: Any) -> BertConfig:
    return BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, **kw)


def _train(tok: Any, tmp_path: Path, train: Any, model: Any = None, n: int | None = None,
           **kw: Any) -> list[int]:
    """Trains one epoch of 8-row batches; the labels the callback recorded, by sample index."""
    torch.manual_seed(0)
    args = {"output_dir": str(tmp_path / "out"), "num_train_epochs": 1, "per_device_train_batch_size": 8,
            "use_cpu": True, "report_to": [], "save_strategy": "no", "logging_strategy": "no",
            "disable_tqdm": True, "seed": 0, **kw.pop("args", {})}
    csl = CSLTrainerCallback(len(train) if n is None else n)
    model = model if model is not None else BertForSequenceClassification(_config(tok, num_labels=3))
    CSLTrainer(model=model, args=TrainingArguments(**args), train_dataset=train, processing_class=tok,
               callbacks=[csl], **kw).train()
    scores = csl.scores().set_index("index").sort_index()
    assert np.isfinite(scores["csl"]).all()
    return [int(v) for v in scores["label"]]


def _labels(tok: Any) -> list[int]:
    return _data(tok)["label"]


def test_a_transform_that_makes_the_labels_is_not_refused(tok, tmp_path) -> None:
    """CIFAR-100's way: the stored column is `fine_label`, the transform gives `labels` (before: 'no
    label column')."""
    train = with_sample_index(_data(tok).rename_column("label", "fine_label"))
    train.set_transform(lambda b: {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                                   "labels": b["fine_label"], "sample_index": b["sample_index"]})
    assert _train(tok, tmp_path, train, args={"remove_unused_columns": False}) == _labels(tok)


def test_a_collator_of_ones_own_may_map_the_labels(tok, tmp_path) -> None:
    """Strings mapped to ids, and ratings 1..3 shifted to 0..2, by the user's collator (before: refused as
    string labels, and as class id 3 beyond num_labels=3)."""
    pad = DataCollatorWithPadding(tok)

    def names_to_ids(features: list[dict[str, Any]]) -> Any:
        ids = [NAMES.index(f.pop("label")) for f in features]
        return {**pad(features), "labels": torch.tensor(ids)}

    def shift(features: list[dict[str, Any]]) -> Any:
        ids = [f.pop("label") - 1 for f in features]
        return {**pad(features), "labels": torch.tensor(ids)}

    base = _data(tok)
    named = base.map(lambda r: {"label": NAMES[r["label"]]}, features=None)
    named = named.cast_column("label", datasets.Value("string"))
    assert _train(tok, tmp_path, with_sample_index(named), data_collator=names_to_ids) == _labels(tok)
    stars = base.map(lambda r: {"label": r["label"] + 1})
    assert _train(tok, tmp_path, with_sample_index(stars), data_collator=shift) == _labels(tok)
    with pytest.raises(HarnessError, match=r"label column 'label' has class id -1 in 1 row\(s\) \(first: \[3\]\)"):
        unlabeled = base.map(lambda r, i: {"label": -1 if i == 3 else r["label"]}, with_indices=True)
        _train(tok, tmp_path, with_sample_index(unlabeled), data_collator=pad)  # transformers' own: still checked


class _OwnConfig(PretrainedConfig):
    model_type = "attack24_own_head"


class _OwnHead(PreTrainedModel):
    """A `PreTrainedModel` with a head of its own: 3 outputs, its config's num_labels the default 2."""

    config_class = _OwnConfig

    def __init__(self, config: PretrainedConfig, vocab: int = 64) -> None:
        super().__init__(config)
        self.embed = nn.EmbeddingBag(vocab, 8)
        self.head = nn.Linear(8, 3)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        return {"logits": self.head(self.embed(input_ids))}


def test_a_head_of_ones_own_is_not_sized_by_its_configs_default_num_labels(tok, tmp_path) -> None:
    torch.manual_seed(0)
    model = _OwnHead(_OwnConfig(), vocab=len(tok))
    assert model.config.num_labels == 2
    assert _train(tok, tmp_path, with_sample_index(_data(tok)), model=model) == _labels(tok)
    with pytest.raises(HarnessError, match=r"holds class id 2, but the model has num_labels=2 outputs; make the "
                                           r"model with num_labels=at least 3"):
        _train(tok, tmp_path, with_sample_index(_data(tok)),
               model=BertForSequenceClassification(_config(tok, num_labels=2)))


def test_a_head_replaced_after_loading_is_not_sized_by_num_labels(tok, tmp_path) -> None:
    """`model.classifier = nn.Linear(hidden, 3)` on a 2-label model: CSLTrainer computes its own
    cross-entropy, so this trained before the checks (the plain Trainer's loss would not)."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(tok, num_labels=2))
    model.classifier = nn.Linear(16, 3)
    assert _train(tok, tmp_path, with_sample_index(_data(tok)), model=model) == _labels(tok)


def test_num_labels_is_read_only_where_it_sizes_the_logits(tok) -> None:
    from harness.integrations._hf_inputs import _head_size

    assert _head_size(BertForSequenceClassification(_config(tok, num_labels=5))) == 5
    assert _head_size(BertForMultipleChoice(_config(tok))) is None  # one output per choice, num_labels 2
    assert _head_size(BertForTokenClassification(_config(tok, num_labels=5))) is None
    assert _head_size(_OwnHead(_OwnConfig(), vocab=len(tok))) is None
    assert _head_size(nn.Linear(2, 3)) is None


def test_a_streaming_dataset_with_known_features_trains(tok, tmp_path) -> None:
    """to_iterable_dataset keeps the features, sample_index included (before: a TypeError reading it)."""
    base = with_sample_index(_data(tok))
    labels = _train(tok, tmp_path, base.to_iterable_dataset(), n=len(base), args={"max_steps": 2})
    assert labels == _labels(tok)


def test_a_label_without_a_value_is_refused(tok, tmp_path) -> None:
    base = _data(tok)
    gaps = base.map(lambda r, i: {"label": None if i in (4, 7) else r["label"]}, with_indices=True,
                    features=base.features)
    with pytest.raises(HarnessError, match=r"label column 'label' has no label \(None\) in 2 row\(s\); unlabeled rows "
                                           r"have no loss: drop them first, dataset.filter\(lambda row: "
                                           r"row\['label'\] is not None\)"):
        _train(tok, tmp_path, with_sample_index(gaps))


def _calls(n: int) -> int:
    """Python calls made by the checks of an n-row dataset (counted, not timed)."""
    from harness.integrations._hf_inputs import check_train_dataset

    rows = datasets.Dataset.from_dict({"x": np.zeros(n, dtype=np.int32), "label": np.arange(n) % 3})
    train = with_sample_index(rows.shuffle(seed=0))
    profile = cProfile.Profile()
    profile.enable()
    check_train_dataset(train, n, None, None, None)
    profile.disable()
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def test_the_checks_make_as_many_python_calls_for_20000_rows_as_for_2000() -> None:
    """Before, the columns were read row by row: ~400 calls a row, minutes on a million rows."""
    small, large = _calls(2_000), _calls(20_000)
    assert large - small < 1_000, (small, large)


def test_a_label_of_minus_100_is_no_loss_of_zero() -> None:
    """-100 is cross_entropy's ignore_index: a row labeled so (HF's "ignore") was recorded with loss 0,
    its csl silently the lowest; a torch dataset's labels are not read when the trainer is built."""
    from harness.integrations._hf_batch import per_sample_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]), reduction="none")
    assert torch.equal(per_sample_cross_entropy(logits, torch.tensor([0, 1])), expected)
    for bad in (-100, -1):
        with pytest.raises(HarnessError, match=rf"the batch's labels run from {bad} to 1, but the model has 2 outputs"):
            per_sample_cross_entropy(logits, torch.tensor([bad, 1]))


def test_an_eval_batch_skips_minus_100_as_the_models_own_loss_does() -> None:
    """Refusing -100 in training must not refuse an eval set that marks rows so: there the batch's
    loss is the model's own (the mean over the rows not labeled -100), and a training batch still stops."""
    from harness.integrations._hf_batch import batch_loss, per_sample_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, -100, 1])
    losses = per_sample_cross_entropy(logits, labels, training=False)
    model_loss = torch.nn.CrossEntropyLoss()(logits, labels)  # what BertForSequenceClassification computes
    assert losses[1] == 0 and torch.allclose(batch_loss(losses, labels, training=False), model_loss)
    with pytest.raises(HarnessError, match="the batch's labels run from -100 to 1"):
        per_sample_cross_entropy(logits, labels, training=True)
