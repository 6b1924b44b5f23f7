"""`--reference fz:FILE` given a text or CSV file said it "contains pickled (object) data" (numpy reads
what is neither an .npz nor a .npy as a pickle), and an empty file escaped as a bare EOFError. Both now
say what the file must be: an .npz holding the arrays the docs name for that kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.tasks.reference import reference_config

LABELS = np.zeros(5, dtype=np.int64)


@pytest.mark.parametrize("kind, keys", [("fz", "tr_mem and tr_labels"), ("cscore", "scores and labels")])
@pytest.mark.parametrize("content, what", [
    (b"tr_mem,tr_labels\n0.1,3\n", "is not an .npz archive (it begins b'tr_mem,t')"),
    (b"", "is empty"),
])
def test_a_file_that_is_no_npz_is_named_so(tmp_path: Path, kind: str, keys: str, content: bytes, what: str) -> None:
    path = tmp_path / "scores.csv"
    path.write_bytes(content)
    with pytest.raises(HarnessError) as caught:
        reference_config(f"{kind}:{path}", {}).check(LABELS)
    message = str(caught.value)
    assert message.startswith(f"--reference {kind}:{path} {what}; a {kind} file must be an .npz holding the arrays "
                              f"{keys} (np.savez(PATH, ")
    assert "pickled" not in message and "docs/experiments.md" in message


def test_the_docs_name_those_keys() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text()
    assert "| `fz:PATH` | Feldman & Zhang `.npz`, keys `tr_mem`, `tr_labels` |" in page
    assert "| `cscore:PATH` | C-scores, keys `scores`, `labels`; 1 − score |" in page
    assert "## The memorization reference" in page


def test_real_files_still_load(tmp_path: Path) -> None:
    """An .npz goes on to the loader's checks; a .npy, a folder and a missing file keep its messages."""
    good = tmp_path / "fz.npz"
    np.savez(good, tr_mem=np.linspace(0, 1, 5), tr_labels=LABELS)
    ref = reference_config(f"fz:{good}", {}).load_file(LABELS)
    assert ref.scores.tolist() == np.linspace(0, 1, 5).tolist()
    np.save(tmp_path / "one.npy", np.zeros(5))
    for name, words in (("one.npy", "a single .npy array, not an .npz archive"), ("", "is a folder"),
                        ("none.npz", "reference file not found")):
        with pytest.raises(HarnessError, match=words):
            reference_config(f"fz:{tmp_path / name}", {}).check(LABELS)


def test_the_cli_says_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "scores.txt"
    text.write_text("hello, world\n")
    code = main(["run", "--dataset", "digits", "--tasks", "memorization", "--proxies", "final_loss", "--seeds", "1",
                 "--epochs", "1", "--reference", f"fz:{text}", "--out", str(tmp_path / "out"), "--store",
                 str(tmp_path / "store"), "--no-progress", "--executor", "inprocess"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1] == (f"error: --reference fz:{text} is not an .npz archive (it begins b'hello, w'); "
                                    "a fz file must be an .npz holding the arrays tr_mem and tr_labels (np.savez(PATH, "
                                    "tr_mem=..., tr_labels=...), one entry per training sample; see "
                                    "docs/experiments.md, The memorization reference)")
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())
