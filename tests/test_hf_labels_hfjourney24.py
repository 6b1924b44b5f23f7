"""`hf:` text whose integer labels do not start at 0 (star ratings 1..5, found by a data-quality
walkthrough with topic ids 1..3): the error told her to re-encode "with a ClassLabel naming only
those", a class she never made; it now names `class_encode_column`, whose result loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))
import _hf_tiny as tiny  # noqa: E402  (sets HF_HUB_OFFLINE)

sys.path.pop(0)
from harness.datasets import load_dataset  # noqa: E402
from harness.errors import HarnessError  # noqa: E402


def test_integer_labels_from_one_name_class_encode_column(tmp_path) -> None:
    import datasets

    texts, _ = tiny.text_corpus(12)
    stars = [1 + i % 3 for i in range(12)]
    ds = datasets.Dataset.from_dict({"review": texts, "stars": stars})
    ds.save_to_disk(str(tmp_path / "raw"))
    tok = tiny.make_tokenizer(tmp_path / "tok")
    with pytest.raises(HarnessError, match=r"class id\(s\) \[0\] never occur; encode column 'stars' \(e.g. ratings "
                                           r"1..5\) as ids 0..C-1 of the values that occur: "
                                           r"dataset.class_encode_column\('stars'\) before save_to_disk"):
        load_dataset(f"hf:{tmp_path / 'raw'},text=review,label=stars,tokenizer={tok}")
    ds.class_encode_column("stars").save_to_disk(str(tmp_path / "encoded"))  # the fix, as the message says
    loaded = load_dataset(f"hf:{tmp_path / 'encoded'},text=review,label=stars,tokenizer={tok}")
    assert loaded.classes == ("1", "2", "3")
    assert loaded.y_train.tolist() == [s - 1 for s in stars]
