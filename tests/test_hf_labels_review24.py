"""The hf: loader reads a label column through Arrow: `with_format("numpy")[column]` made ~200 Python
calls a row in datasets 4+ (its lazy Column, converted row by row), minutes on a million rows, as
CSLTrainer's checks found (60418a8). Counted, not timed; the ids are the same."""

from __future__ import annotations

import cProfile
import pstats

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from harness.datasets.hf import _labels  # noqa: E402


def _calls(n: int) -> tuple[int, np.ndarray]:
    ds = datasets.Dataset.from_dict({"label": (np.arange(n) % 3).tolist()})
    profile = cProfile.Profile()
    profile.enable()
    y = _labels("hf:x", ds, "label", "train")
    profile.disable()
    return int(pstats.Stats(profile).total_calls), y  # type: ignore[attr-defined]


def test_labels_are_read_in_a_constant_number_of_calls() -> None:
    (small, y_small), (large, y_large) = _calls(1_000), _calls(10_000)
    assert large < small + 1_000, (small, large)  # was ~200 a row: 2,000,000 more
    assert y_large.dtype == np.int64 and y_large.tolist() == (np.arange(10_000) % 3).tolist()
    assert y_small.tolist() == (np.arange(1_000) % 3).tolist()


def test_a_class_label_column_and_negative_ids_as_before() -> None:
    ds = datasets.Dataset.from_dict({"label": [0, 2, 1]}).cast_column(
        "label", datasets.ClassLabel(names=["a", "b", "c"]))
    assert _labels("hf:x", ds, "label", "train").tolist() == [0, 2, 1]
    bad = datasets.Dataset.from_dict({"label": [0, -1, 1]})
    with pytest.raises(Exception, match="negative class id -1 in 1 row"):
        _labels("hf:x", bad, "label", "test")


def test_the_test_texts_are_read_as_one_list(tmp_path, monkeypatch) -> None:
    """`test[column]` is a lazy Column in datasets 4+: indexing it row by row was a Dataset lookup
    each (~126 Python calls a row); the loader takes the column as a list, then its kept rows."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import _hf_tiny as tiny

    sys.path.pop(0)
    from harness.datasets import load_dataset

    column = getattr(datasets.arrow_dataset, "Column", None)
    if column is None:
        pytest.skip("datasets < 4: a column is a list")
    looked_up = []
    original = column.__getitem__

    def counting(self, key):  # type: ignore[no-untyped-def]
        if isinstance(key, int):
            looked_up.append(key)
        return original(self, key)

    monkeypatch.setattr(column, "__getitem__", counting)
    tok = tiny.make_tokenizer(tmp_path / "tok")
    data = load_dataset(f"hf:{tiny.save_text_dataset(tmp_path / 'text', n=24, n_test=12)},tokenizer={tok}")
    texts, _ = tiny.text_corpus(12, 1)
    assert data.test_sample_names is not None and len(data.test_sample_names) == len(data.x_test)
    assert data.test_sample_names == tuple(texts) and looked_up == []  # all 12 kept, in order
