"""`hf:PATH` datasets saved with save_to_disk: images and text, options, content fingerprint, the
errors a user meets, and `python -m harness run` end to end on both kinds (no downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("datasets")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))
import _hf_tiny as tiny  # noqa: E402  (sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)

sys.path.pop(0)
import datasets  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.datasets import load_dataset  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.models import build_model  # noqa: E402
from harness.prepared import prepare  # noqa: E402
from harness.runspec import DataSpec  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        "tok": tiny.make_tokenizer(root / "tok"),
        "text": tiny.save_text_dataset(root / "text"),
        "img": tiny.save_image_dataset(root / "img"),
        "gray": tiny.save_image_dataset(root / "gray", gray=True),
    }


def test_image_dataset(saved):
    d = load_dataset(f"hf:{saved['img']}")
    x, y = tiny.image_arrays(30)
    assert d.x_train.dtype == torch.uint8 and tuple(d.x_train.shape) == (30, 3, 8, 8)
    assert np.array_equal(d.x_train.numpy(), x.transpose(0, 3, 1, 2)) and np.array_equal(d.y_train.numpy(), y)
    assert d.classes == ("a", "b", "c") and d.n_train == 30 and len(d.y_test) == 0
    gray = load_dataset(f"hf:{saved['gray']},image=img,label=label")
    assert tuple(gray.x_train.shape) == (30, 1, 8, 8) and gray.is_image
    assert load_dataset(f"hf:{saved['img']}", subset=10).n_train == 10


def test_text_dataset_tokens(saved):
    name = f"hf:{saved['text']},text=sentence,tokenizer={saved['tok']},max_length=6"
    d = load_dataset(name)
    assert d.is_tokens and d.x_train.dtype == torch.int64 and d.x_train.shape[1:] == (6, 1, 1)
    assert d.n_train == 64 and len(d.y_test) == 16 and d.classes == ("neg", "pos")
    from transformers import AutoTokenizer

    texts, y = tiny.text_corpus(64, 0)
    ids = AutoTokenizer.from_pretrained(str(saved["tok"]))(texts[0], truncation=True, max_length=6)["input_ids"]
    assert d.x_train[0, : len(ids), 0, 0].tolist() == [i + 1 for i in ids]  # id + 1, 0 = padding
    assert np.array_equal(d.y_train.numpy(), y)
    # the column is found by its type when the tokenizer is given; token ids are not normalised
    auto = load_dataset(f"hf:{saved['text']},tokenizer={saved['tok']},max_length=6")
    assert auto.fingerprint == d.fingerprint
    data = prepare(DataSpec(dataset=name), d, torch.device("cpu"))
    assert torch.equal(data.inputs(torch.arange(4)), d.x_train[:4])
    for model in ("text_bow", "text_cnn"):
        assert build_model(model, d.input_shape, 2)(d.x_train[:4]).shape == (4, 2)


def test_fingerprint_is_the_content(saved, tmp_path):
    a = load_dataset(f"hf:{saved['img']}")
    copy = datasets.load_from_disk(str(saved["img"]))
    copy.save_to_disk(str(tmp_path / "same"))
    assert load_dataset(f"hf:{tmp_path / 'same'}").fingerprint == a.fingerprint  # same rows, another folder
    x, y = tiny.image_arrays(30)
    y = y.copy()
    y[3] = (y[3] + 1) % 3
    changed = copy.map(lambda row, i: {"label": int(y[i])}, with_indices=True)
    changed.save_to_disk(str(tmp_path / "changed"))
    assert load_dataset(f"hf:{tmp_path / 'changed'}").fingerprint != a.fingerprint
    t = f"hf:{saved['text']},tokenizer={saved['tok']}"
    assert load_dataset(t).fingerprint != load_dataset(t + ",max_length=3").fingerprint


def _save(path: Path, columns: dict, features: dict | None = None) -> Path:
    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features) if features else None)
    ds.save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    "columns, option, message",
    [
        ({"sentence": ["a b", "c"], "target": [0, 1]}, ",text=sentence,tokenizer=TOK",
         r"no label column .*\['sentence', 'target'\].*label=COLUMN"),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, ",text=review,tokenizer=TOK",
         r"no text column 'review'.*\['sentence', 'label'\].*text=COLUMN"),
        ({"sentence": ["a b", "c"], "label": [0.0, 1.0]}, ",tokenizer=TOK",
         r"holds float64, not class ids; cast it.*Value\('int64'\)"),
        ({"sentence": ["a b", "c"], "label": ["neg", "pos"]}, ",tokenizer=TOK", r"strings.*class_encode_column"),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, "", r"holds text: add tokenizer="),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, ",text=sentence", r"needs tokenizer="),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, ",text=sentence,tokenizer=TOK,colour=red",
         r"unknown option 'colour'"),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, ",text=label,tokenizer=TOK", r"'label' is the label column"),
        ({"sentence": ["a b", "c"], "label": [0, 0]}, ",tokenizer=TOK", r"single class"),
        ({"sentence": [], "label": []}, ",tokenizer=TOK", r"empty"),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, ",tokenizer=/nonexistent/tok",
         r"tokenizer folder /nonexistent/tok does not exist"),
        ({"sentence": ["a b", "c"], "label": [0, 1]}, ",tokenizer=no-such-cached-tokenizer", r"cannot load tokenizer"),
    ],
)
def test_errors_name_the_fix(saved, tmp_path, columns, option, message):
    features = None
    if not columns["sentence"]:
        features = {"sentence": datasets.Value("string"), "label": datasets.Value("int64")}
    path = _save(tmp_path / "ds", columns, features)
    with pytest.raises(HarnessError, match=message):
        load_dataset(f"hf:{path}{option.replace('TOK', str(saved['tok']))}")


def test_missing_unsaved_and_split_errors(saved, tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        load_dataset(f"hf:{tmp_path / 'nowhere'}")
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "0.png").write_bytes(b"")
    with pytest.raises(HarnessError, match="not a dataset saved with save_to_disk.*imagefolder:PATH"):
        load_dataset(f"hf:{tmp_path / 'pics'}")
    with pytest.raises(HarnessError, match=r"no 'training' split \(it has \['train', 'test'\]\)"):
        load_dataset(f"hf:{saved['text']},tokenizer={saved['tok']},split=training")
    no_train = datasets.load_from_disk(str(saved["text"]))
    datasets.DatasetDict({"validation": no_train["test"]}).save_to_disk(str(tmp_path / "val"))
    with pytest.raises(HarnessError, match=r"no 'train' split.*split=NAME"):
        load_dataset(f"hf:{tmp_path / 'val'},tokenizer={saved['tok']}")
    assert load_dataset(f"hf:{saved['text']},tokenizer={saved['tok']},test=none").x_test.shape[0] == 0
    # an unlabeled test split (-1, as GLUE's) is refused with the fix
    test = no_train["test"].cast_column("label", datasets.Value("int64")).map(lambda r: {"label": -1})
    train = no_train["train"].cast_column("label", datasets.Value("int64"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "glue"))
    with pytest.raises(HarnessError, match="unlabeled rows.*test=none"):
        load_dataset(f"hf:{tmp_path / 'glue'},tokenizer={saved['tok']}")


def test_image_column_errors(saved, tmp_path):
    with pytest.raises(HarnessError, match=r"no image column 'picture'.*\['img', 'label'\].*image=COLUMN"):
        load_dataset(f"hf:{saved['img']},image=picture")
    with pytest.raises(HarnessError, match="'label' is the label column"):
        load_dataset(f"hf:{saved['img']},image=label")
    _save(tmp_path / "arr", {"img": [[1, 2], [3, 4]], "label": [0, 1]})
    with pytest.raises(HarnessError, match="not an Image feature.*cast_column"):
        load_dataset(f"hf:{tmp_path / 'arr'},image=img")


def _run(dataset: str, model: str, out: Path, store: Path) -> int:
    return main(["run", "--dataset", dataset, "--model", model, "--epochs", "2", "--batch-size", "16",
                 "--subset", "30", "--seeds", "1", "--noise-rates", "0.1", "--proxies", "csl,aum",
                 "--tasks", "mislabeled", "--executor", "inprocess", "--no-progress", "--bootstrap", "0",
                 "--out", str(out), "--store", str(store)])


@pytest.mark.parametrize("kind", ["image", "text"])
def test_cli_run_end_to_end(saved, tmp_path, kind, capsys):
    if kind == "image":
        dataset, model = f"hf:{saved['img']}", "mlp"
    else:
        dataset, model = f"hf:{saved['text']},text=sentence,tokenizer={saved['tok']},max_length=16", "text_bow"
    assert _run(dataset, model, tmp_path / "out", tmp_path / "store") == 0
    scores = list((tmp_path / "out" / "scores").glob("*.csv"))
    assert scores, capsys.readouterr()
    assert _run(dataset, model, tmp_path / "out2", tmp_path / "store") == 0
    assert "0 trained, 1 reused" in capsys.readouterr().err  # same content, same store address


def test_cli_refuses_bad_dataset_in_one_line(saved, tmp_path, capsys):
    code = main(["run", "--dataset", f"hf:{saved['text']},text=nope,tokenizer={saved['tok']}", "--model",
                 "text_bow", "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no text column 'nope'" in err


@pytest.mark.parametrize("model", ["mlp", "small_cnn"])
def test_an_image_model_on_text_is_refused_before_training(saved, tmp_path, capsys, model):
    dataset = f"hf:{saved['text']},text=sentence,tokenizer={saved['tok']},max_length=16"
    assert _run(dataset, model, tmp_path / "out", tmp_path / "store") == 2
    err = capsys.readouterr().err
    assert f"model {model} cannot take the token ids" in err and "pass --model text_bow (or text_cnn)" in err
    assert "e.g. mlp" not in err and "dtype" not in err  # not the failed model, not torch's error
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.npz"))
