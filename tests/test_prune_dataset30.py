"""`store prune --dataset` takes the dataset as `run` took it: the spelling `run` accepted for one dataset
(`imagefolder:dig/,exclude=./x.txt`) selects the entries stored under its written form, not "no entry"."""

from __future__ import annotations

import pytest

from harness.store_report import selection_of
from harness.values import parse_dataset


@pytest.mark.parametrize("given", ["imagefolder:dig/,exclude=./x.txt", "imagefolder:dig//,exclude=x.txt",
                                   "imagefolder:dig/"])
def test_the_selection_is_the_written_name(given: str) -> None:
    selection, _, _ = selection_of({"dataset": given})
    assert selection.dataset == parse_dataset(given)
    assert selection.dataset in ("imagefolder:dig,exclude=x.txt", "imagefolder:dig")


def test_a_builtin_name_is_kept() -> None:
    assert selection_of({"dataset": "digits"})[0].dataset == "digits"
