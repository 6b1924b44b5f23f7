"""Session 30's leftover: `--compile` switched between a kill and the resume was recorded for the finishing
process alone (`Manifest.compiled`), so an experiment of the other choice read a half-compiled run without the
other-compile warning. As with threads (test_threads_resumed29), each machine segment records whether it trained
compiled (`machine_record(device, compiled)`), and `run_compiled` reads every segment's."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from harness.machine import machine_record, run_compiled, run_label, run_machines, trained_by
from harness.planner import warn_other_compile

HERE = {"cpu": "X", "cpu_capability": "AVX512", "cpus": 2, "arch": "x86_64", "threads": 2}


def _run(compiled_at_the_end: bool | None, machine: dict) -> SimpleNamespace:
    return SimpleNamespace(manifest=SimpleNamespace(engine="single", compiled=compiled_at_the_end, machine=machine))


def test_a_machine_record_says_whether_it_trains_compiled_when_told() -> None:
    assert machine_record("cpu", compiled=True)["compiled"] is True
    assert machine_record("cpu", compiled=False)["compiled"] is False
    assert "compiled" not in machine_record("cpu")  # the ensemble engine's (never compiled): as before


@pytest.mark.parametrize("first", [True, False])
def test_a_run_resumed_with_the_other_choice_records_both(first: bool) -> None:
    record = trained_by([{**HERE, "compiled": first, "epochs": [1, 3]}], {**HERE, "compiled": not first}, 5)
    assert run_compiled(record) == {True, False}
    assert [m["epochs"] for m in record["earlier"]] == [[1, 3]] and record["epochs"] == [4, 5]
    assert run_label(record) == "AVX512 X"  # one kind of machine: the mixed-machines line stays out
    same = trained_by([{**HERE, "compiled": first, "epochs": [1, 3]}], {**HERE, "compiled": first}, 5)
    assert run_compiled(same) == {first} and "earlier" not in same and "epochs" not in same  # one segment
    assert run_compiled({**HERE, "epochs": [1, 5]}) == set()  # recorded before the choice was
    assert len(run_machines(record)) == 2


@pytest.mark.parametrize("compile", [False, True])
def test_an_experiment_of_either_choice_is_told_of_a_half_compiled_run(compile: bool) -> None:
    mixed = trained_by([{**HERE, "compiled": not compile, "epochs": [1, 3]}], {**HERE, "compiled": compile}, 5)
    done = {"a": _run(compile, mixed), "b": _run(compile, trained_by([], {**HERE, "compiled": compile}, 5))}
    was = "with" if not compile else "without"
    with pytest.warns(UserWarning, match=rf"^1 run\(s\) read from the store were trained {was} --compile"):
        warn_other_compile(done, compile)  # type: ignore[arg-type]


def test_runs_all_of_this_choice_say_nothing() -> None:
    done = {"a": _run(False, trained_by([{**HERE, "compiled": False, "epochs": [1, 3]}], {**HERE, "compiled": False},
                                        5)),
            "b": _run(None, {**HERE, "epochs": [1, 5]})}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_compile(done, False)  # type: ignore[arg-type]
