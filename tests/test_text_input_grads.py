"""Text datasets (int64 token ids) have no input gradients: the proxies whose recorders need them
(loss_sensitivity, csg, learning_time, curvature) are refused while planning, before anything trains,
with the fix in the message."""

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


@pytest.mark.parametrize(("proxies", "named", "rest"), [
    ("csl,loss_sensitivity", ["loss_sensitivity"], ", e.g. --proxies 'csl'"),
    ("csg,curvature,aum", ["csg", "curvature"], ", e.g. --proxies 'aum'"),
    ("learning_time", ["learning_time"], ""),  # nothing left to run: no list to paste
])
def test_input_gradient_proxies_are_refused_on_text_before_training(text, tmp_path, capsys, proxies, named,
                                                                    rest) -> None:
    assert _run(text, proxies, tmp_path) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "text (token ids)" in err and "no input gradients" in err and "drop them from --proxies" in err
    assert all(name in err for name in named)
    assert "loss_sensitivity, csg, learning_time, curvature" in err  # every proxy that needs them
    assert err.rstrip().endswith("drop them from --proxies for text" + rest)  # the rest, to paste
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("manifest.json"))
    assert not (tmp_path / "out").exists()


def test_all_proxies_on_text_name_the_ones_that_apply(text, tmp_path, capsys) -> None:
    """`--proxies all` is refused on text; the line ends with the selection that runs, ready to paste."""
    assert _run(text, "all", tmp_path) == 2
    pasted = capsys.readouterr().err.rstrip().rpartition("--proxies ")[2]
    assert pasted[0] == pasted[-1] == "'" and "csl" in pasted.strip("'").split(",")
    assert not {"loss_sensitivity", "csg", "curvature", "learning_time"} & set(pasted.strip("'").split(","))
    assert _run(text, pasted.strip("'"), tmp_path) == 0


def test_text_without_input_gradient_proxies_still_runs(text, tmp_path) -> None:
    assert _run(text, "csl,aum", tmp_path) == 0


def test_no_paste_with_proxy_arg(text, tmp_path, capsys) -> None:
    """The rest is pasted only without --proxy-arg: a pasted label holds its parameters
    (`el2n(window=0.2)`), which the same --proxy-arg given again repeats, refused."""
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
