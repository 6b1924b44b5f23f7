"""What tokenizing does to an `hf:` text dataset is said (found by a data-quality walkthrough on
2,000 topic sentences): blank texts trained silently as padding and were listed as exact copies of
each other; `max_length=3` cut nearly every text, silently, and 69 pairs of different texts came out
as "exact copies"; a tokenizer folder's typo got the Hub's "Repo id must be in the form ..."."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("transformers")

import _hf_tiny as tiny  # noqa: E402

from harness.datasets import load_dataset  # noqa: E402
from harness.errors import HarnessError  # noqa: E402


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    return tiny.make_tokenizer(tmp_path_factory.mktemp("tok"))


def _save(path: Path, texts: list[str]) -> Path:
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    labels = [i % 2 for i in range(len(texts))]
    datasets.Dataset.from_dict({"sentence": texts, "label": labels}, features=features).save_to_disk(str(path))
    return path


def test_blank_texts_are_named(tmp_path, tok) -> None:
    texts, _ = tiny.text_corpus(20)
    texts[5], texts[6] = "", "   "
    path = _save(tmp_path / "blank", texts)
    with pytest.warns(UserWarning, match=r"2 training text\(s\) are empty or only white space \(rows 5, 6\): each "
                                         r"trains as padding alone"):
        load_dataset(f"hf:{path},tokenizer={tok}")


def test_texts_that_reach_max_length_are_counted(tmp_path, tok) -> None:
    texts = ["the film was good"] * 3 + ["bad", "good plot", "the plot was a very dull story"]
    path = _save(tmp_path / "long", texts)
    with pytest.warns(UserWarning, match=r"4 of 6 training texts reach max_length=3 tokens \(rows 0, 1, 2, 5\): "
                                         r"longer ones are cut there"):
        cut = load_dataset(f"hf:{path},tokenizer={tok},max_length=3")
    assert cut.x_train.shape[1] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default max_length keeps them whole: nothing to say
        whole = load_dataset(f"hf:{path},tokenizer={tok}")
    assert whole.x_train.shape[1] == 7


def test_a_missing_tokenizer_folder_is_named(tmp_path, tok) -> None:
    path = _save(tmp_path / "ok", tiny.text_corpus(10)[0])
    for given in (f"{tok}k", "./no/such/tok", "~/no-such-tokenizer-folder"):
        with pytest.raises(HarnessError, match=r"tokenizer folder .* does not exist; pass the folder you saved with "
                                               r"tokenizer.save_pretrained"):
            load_dataset(f"hf:{path},tokenizer={given}")


def test_suspects_and_duplicates_name_each_sample_by_its_text(tmp_path, tok, make_config) -> None:
    """A text suspect was a row number to join back to the dataset; its text is what a reader fixes."""
    import pandas as pd

    from harness.experiment import Experiment

    texts, _ = tiny.text_corpus(40)
    texts[39] = texts[3]  # an exact copy, labelled 1 (row 3 is labelled 1 as well: 3 % 2 == 39 % 2)
    path = _save(tmp_path / "txt", texts)
    cfg = make_config(dataset=f"hf:{path},tokenizer={tok}", model="text_bow", tasks=("suspects",), bootstrap=0,
                      proxies="csl,final_loss", seeds=(0, 1), task_args={"suspects": {"k": 10}})
    Experiment(cfg).run()
    table = pd.read_csv(cfg.out / "suspects" / "suspects.csv")
    assert "file" not in table.columns and list(table.columns[:3]) == ["rank", "index", "text"]
    assert dict(zip(table["index"], table["text"])) == dict(enumerate(texts))
    pairs = pd.read_csv(cfg.out / "suspects" / "duplicates.csv")
    assert (pairs["a"].tolist(), pairs["b"].tolist()) == ([3], [39])
    assert pairs["text_a"].tolist() == pairs["text_b"].tolist() == [texts[3]]
    scores = pd.read_csv(next((cfg.out / "scores").glob("*.csv")))
    assert scores["text"].tolist() == texts


def test_path_mistakes_say_what_is_wrong(tmp_path, tok, capsys) -> None:
    """A space after an option's comma, a path without its kind, NaN in a label file: each said as such."""
    import numpy as np

    from harness.cli import main

    path = _save(tmp_path / "ok", tiny.text_corpus(10)[0])
    common = ["--model", "text_bow", "--epochs", "1", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
    assert main(["run", "--dataset", f"hf:{path}, tokenizer={tok}", *common]) == 2
    assert "no space after a comma" in capsys.readouterr().err
    assert main(["run", "--dataset", str(path), *common]) == 2
    err = capsys.readouterr().err
    assert f"did you mean --dataset hf:{path} (a Hugging Face dataset saved with save_to_disk)?" in err
    labels = np.zeros(1437)
    labels[[3, 9]] = np.nan
    np.save(tmp_path / "nan.npy", labels)
    assert main(["run", "--tasks", "mislabeled", "--noisy-labels", str(tmp_path / "nan.npy"), *common[2:]]) == 2
    assert "hold 2 NaN (missing labels, first at sample 3)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_test_text_that_copies_a_training_text_is_listed_by_both_texts(tmp_path, tok) -> None:
    """`suspects/train_test_duplicates.csv` names a text pair by its texts (`text_test`, `text_train`),
    the test texts kept under --subset included; token ids are matched by exact copies only."""
    import datasets
    import numpy as np

    from harness.near_duplicates import find_duplicates

    texts, _ = tiny.text_corpus(60)
    train, test = texts[:40], texts[40:]
    test[7] = train[12]  # a leaked test text
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    splits = {name: datasets.Dataset.from_dict({"sentence": t, "label": [i % 2 for i in range(len(t))]},
                                               features=features) for name, t in (("train", train), ("test", test))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    data = load_dataset(f"hf:{tmp_path / 'dd'},tokenizer={tok}")
    assert data.test_sample_names == tuple(test)
    _, copies = find_duplicates(data.x_train, data.x_test)
    assert copies[["test", "train"]].values.tolist() == [[7, 12]]
    names = np.asarray(data.test_sample_names, dtype=object)
    assert names[7] == data.sample_names[12] == train[12]
    kept = load_dataset(f"hf:{tmp_path / 'dd'},tokenizer={tok}", subset=10)  # keeps every test text (at most 1,000)
    assert kept.test_sample_names == tuple(test) and len(kept.x_train) == 10
