"""Tiny Hugging Face fixtures built in code (no downloads): a word-level tokenizer, a synthetic
sentiment corpus, and image/text datasets saved with `save_to_disk`. Shared by the hf: dataset,
Trainer and example tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network, whatever a test asks for
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

GOOD = ["good", "great", "fine", "lovely", "superb", "nice"]
BAD = ["bad", "awful", "poor", "dull", "boring", "weak"]
FILLER = ["the", "film", "plot", "was", "a", "very", "and", "acting", "story", "it"]


def text_corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n sentences, label 1 when positive words outnumber negative ones."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, int(rng.integers(3, 8))))
        words += list(rng.choice(GOOD if label else BAD, int(rng.integers(1, 3))))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def make_tokenizer(directory: Path) -> Path:
    """A WordLevel tokenizer over the fixtures' words, saved with save_pretrained; returns its folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(GOOD + BAD + FILLER)],
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(str(directory))
    return directory


def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`make_tokenizer`'s tokenizer loaded back with AutoTokenizer, as a user's saved one is: the `tok`
    fixture of the Trainer tests (one place, so they cannot drift apart)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(make_tokenizer(tmp_path_factory.mktemp("tok"))))


def save_text_dataset(path: Path, n: int = 64, n_test: int = 16, *, column: str = "sentence",
                      label: str = "label", dict_: bool = True) -> Path:
    import datasets

    features = datasets.Features({column: datasets.Value("string"),
                                  label: datasets.ClassLabel(names=["neg", "pos"])})
    texts, y = text_corpus(n, 0)
    train = datasets.Dataset.from_dict({column: texts, label: y.tolist()}, features=features)
    if not dict_:
        train.save_to_disk(str(path))
        return path
    texts_t, y_t = text_corpus(n_test, 1)
    test = datasets.Dataset.from_dict({column: texts_t, label: y_t.tolist()}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    return path


def image_arrays(n: int, seed: int = 0, size: int = 8, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return x, y


def save_image_dataset(path: Path, n: int = 30, *, gray: bool = False) -> Path:
    import datasets
    from PIL import Image

    x, y = image_arrays(n)
    images = [Image.fromarray(a[..., 0] if gray else a) for a in x]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"img": images, "label": y.tolist()}, features=features)
    ds.save_to_disk(str(path))
    return path
