"""CSL from a Hugging Face Trainer run on text classification: a tiny BERT (built from a config,
no download) on short sentiment sentences with 10 % flipped labels; the flipped ones come out on top.

    pip install 'memprox[hf]' && python examples/hf_trainer_text_csl.py

The changes to an ordinary Trainer script: the dataset gets a `sample_index` column
(with_sample_index), Trainer becomes CSLTrainer, and a CSLTrainerCallback goes in callbacks.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")                # everything below is built here: no network

import datasets
import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    TrainingArguments,
)

from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index

# 200 sentences: positive or negative words among filler, label = their sentiment
good, bad = ["good", "great", "lovely", "superb"], ["bad", "awful", "dull", "weak"]
filler = ["the", "film", "plot", "was", "a", "very", "and", "acting", "story", "it"]
rng = np.random.default_rng(0)
labels = rng.integers(0, 2, 200)
texts = [" ".join(rng.permutation(list(rng.choice(filler, 5)) + list(rng.choice(good if c else bad, 2))))
         for c in labels]
flipped = rng.choice(len(labels), size=20, replace=False)   # flip 10% of the labels
labels[flipped] = 1 - labels[flipped]

# a word-level tokenizer trained on the vocabulary, saved and loaded by path like any other
word_level = Tokenizer(models.WordLevel(unk_token="[UNK]"))
word_level.pre_tokenizer = pre_tokenizers.Whitespace()
word_level.train_from_iterator([" ".join(good + bad + filler)], trainers.WordLevelTrainer(
    special_tokens=["[PAD]", "[UNK]"]))
tokenizer_dir = tempfile.mkdtemp()
PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
    tokenizer_dir)
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

train = datasets.Dataset.from_dict({"text": texts, "label": labels.tolist()})
train = train.map(lambda rows: tokenizer(rows["text"], truncation=True, max_length=32), batched=True)
train = with_sample_index(train.remove_columns("text"))    # adds the `sample_index` column

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(
    vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
    max_position_embeddings=64, num_labels=2))

csl = CSLTrainerCallback(len(train))
args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=10, per_device_train_batch_size=32,
                         learning_rate=1e-2, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                         disable_tqdm=True, seed=0)
trainer = CSLTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=[csl])
trainer.train()                                             # the padding collator carries the index

scores = csl.scores()                                       # index, label, csl, forgetting, aum, ...
suspects = csl.suspects(k=20)                               # the 20 highest-CSL sentences
print(suspects.head())
print(f"flipped labels among the 20 suspects: {np.isin(suspects['index'], flipped).mean():.0%}")
