"""A run resumed at another thread count (or the other --compile choice) trained under both: the warning's
"pass --threads 1 to match them" led to a rerun at 1 thread, which read the same run back and said "pass
--threads 2 to match them" (attsh30). Such runs are named as mixed, with the fix that works: another --store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.machine import trained_by
from harness.plan_checks import RESUMED
from harness.planner import warn_other_compile, warn_other_threads

HERE = {"cpu": "X", "cpu_capability": "AVX512", "cpus": 2, "arch": "x86_64"}
CPU = torch.device("cpu")


def _run(threads: int, machine: dict, compiled: bool = False) -> SimpleNamespace:
    return SimpleNamespace(manifest=SimpleNamespace(threads=threads, device="cpu", machine=machine, engine="single",
                                                    compiled=compiled))


def _advice(caught) -> list[str]:
    return [str(w.message).split("gives; ")[1] for w in caught]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_run_of_both_counts_is_not_matched_by_either(threads: int) -> None:
    mixed = _run(2, trained_by([{**HERE, "threads": 1, "epochs": [1, 3]}], {**HERE, "threads": 2}, 5))
    with pytest.warns(UserWarning) as caught:
        warn_other_threads({"a": mixed}, threads, CPU, RESUMED)  # type: ignore[dict-item]
    assert _advice(caught) == ["they mix thread counts (resumed at another), which no --threads value matches: pass "
                               "another --store to retrain"]


def test_runs_of_one_other_count_keep_their_advice_and_a_mix_is_counted() -> None:
    plain = _run(1, trained_by([], {**HERE, "threads": 1}, 5))
    with pytest.warns(UserWarning) as caught:
        warn_other_threads({"a": plain}, 2, CPU)  # type: ignore[dict-item]
    assert _advice(caught) == ["pass --threads 1 to match them, or another --store to retrain"]
    mixed = _run(2, trained_by([{**HERE, "threads": 1, "epochs": [1, 3]}], {**HERE, "threads": 2}, 5))
    with pytest.warns(UserWarning) as caught:
        warn_other_threads({"a": plain, "b": mixed}, 2, CPU)  # type: ignore[dict-item]
    assert [str(w.message).split(" were")[0] for w in caught] == ["2 run(s) read from the store"]
    assert _advice(caught) == ["1 of them mix thread counts (resumed at another), which no --threads value "
                               "matches: pass another --store to retrain"]


@pytest.mark.parametrize("compile", [False, True])
def test_a_half_compiled_run_is_not_matched_by_either_choice(compile: bool) -> None:
    half = _run(1, trained_by([{**HERE, "compiled": not compile, "epochs": [1, 3]}], {**HERE, "compiled": compile},
                              5), compiled=compile)
    with pytest.warns(UserWarning) as caught:
        warn_other_compile({"a": half}, compile, RESUMED)  # type: ignore[dict-item]
    assert _advice(caught) == ["they mix compiled and eager epochs (resumed the other way), which neither choice "
                               "matches: pass another --store to retrain"]
    whole = _run(1, trained_by([], {**HERE, "compiled": not compile}, 5), compiled=not compile)
    with pytest.warns(UserWarning) as caught:
        warn_other_compile({"a": whole}, compile)  # type: ignore[dict-item]
    assert _advice(caught) == [f"{'drop' if compile else 'pass'} --compile to match them, or another --store to "
                               "retrain"]
