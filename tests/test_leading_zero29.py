"""`--task-arg memorization.k=02` said "must be an integer >= 2, got '02'" (crossfix29): the value is read as
a Python literal, and Python reads no integer with a leading zero; the proxies' parameters already said so."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.values import leading_zero_hint


@pytest.mark.parametrize(("arg", "task", "needle"), [
    ("memorization.k=02", "memorization", "memorization.k must be an integer >= 2 (models to train), got '02' "
                                          "(Python reads no integer with a leading zero: write 2)"),
    ("memorization.top_k=010", "memorization", "got '010' (Python reads no integer with a leading zero: write 10)"),
    ("suspects.k=07", "suspects", "suspects.k must be a positive integer, got '07' (Python reads no integer with "
                                  "a leading zero: write 7)"),
])
def test_a_task_parameter_with_a_leading_zero_is_told_how_to_write_it(tmp_path, capsys, arg, task, needle) -> None:
    code = main(["run", "--task-arg", arg, "--tasks", task, "--proxies", "csl", "--store", str(tmp_path / "s")])
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("value", "hint"), [("02", "write 2"), (" -0_7 ", "write -7"), ("0", ""), ("20", ""),
                                             (2, ""), ("0x2", ""), ("abc", "")])
def test_the_hint_is_given_for_leading_zeros_only(value, hint) -> None:
    assert (hint in leading_zero_hint(value)) and (bool(leading_zero_hint(value)) == bool(hint))
