"""The text check's refusal (harness.plan_checks) pastes the rest of the selection only without
--proxy-arg: a pasted label holds its parameters (`el2n(window=0.2)`), and rerun with the same
--proxy-arg it was refused as given twice, as the planner's retraining notice already avoids."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))
import _hf_tiny as tiny  # noqa: E402  (sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)

sys.path.pop(0)

from harness.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("hf")
    tok, saved = tiny.make_tokenizer(root / "tok"), tiny.save_text_dataset(root / "text")
    return f"hf:{saved},text=sentence,tokenizer={tok},max_length=16"


def _run(dataset: str, proxies: str, tmp_path: Path, *extra: str) -> int:
    return main(["run", "--dataset", dataset, "--model", "text_bow", "--epochs", "2", "--batch-size", "16",
                 "--subset", "30", "--seeds", "1", "--noise-rates", "0.1", "--proxies", proxies, *extra,
                 "--tasks", "mislabeled", "--executor", "inprocess", "--no-progress", "--bootstrap", "0",
                 "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")])


def test_no_paste_with_proxy_arg(text, tmp_path, capsys) -> None:
    arg = ("--proxy-arg", "el2n.window=0.2")
    assert _run(text, "el2n,loss_sensitivity", tmp_path, *arg) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith("drop them from --proxies for text"), err
    # what the old line offered is refused with that --proxy-arg: the parameter given twice
    assert _run(text, "el2n(window=0.2)", tmp_path, *arg) == 2
    assert "given both by --proxy-arg and in --proxies" in capsys.readouterr().err


def test_paste_without_proxy_arg(text, tmp_path, capsys) -> None:
    assert _run(text, "el2n(window=0.2),loss_sensitivity", tmp_path) == 2
    assert capsys.readouterr().err.rstrip().endswith("for text, e.g. --proxies 'el2n(window=0.2)'")
