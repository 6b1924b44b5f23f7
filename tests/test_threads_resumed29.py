"""A run killed at one thread count and resumed at another (resume29): its manifest recorded the finishing
process's count alone, so an experiment at the first count was not told that the run's later epochs, and
one at the second that its first epochs, came from another count. Each machine segment now records its threads."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from harness.machine import machine_record, run_threads, trained_by
from harness.planner import warn_other_threads

CPU = torch.device("cpu")


def _run(final_threads: int, machine: dict) -> SimpleNamespace:
    return SimpleNamespace(manifest=SimpleNamespace(threads=final_threads, device="cpu", machine=machine))


def test_a_machine_record_carries_the_thread_count(monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert machine_record("cpu")["threads"] == 3


def test_a_run_resumed_at_another_count_records_both() -> None:
    here = {"cpu": "X", "cpu_capability": "AVX512", "cpus": 2, "arch": "x86_64"}
    before = [{**here, "threads": 1, "epochs": [1, 3]}]
    record = trained_by(before, {**here, "threads": 2}, 5)
    assert run_threads(record) == {1, 2}
    assert [m["epochs"] for m in record["earlier"]] == [[1, 3]] and record["epochs"] == [4, 5]
    assert run_threads(trained_by([{**here, "threads": 2, "epochs": [1, 3]}], {**here, "threads": 2}, 5)) == {2}
    assert run_threads({**here, "epochs": [1, 5]}) == set()  # recorded before the threads were


@pytest.mark.parametrize("threads", [1, 2])
def test_an_experiment_at_either_count_is_told(threads) -> None:
    here = {"cpu": "X", "cpu_capability": "AVX512", "cpus": 2, "arch": "x86_64"}
    mixed = trained_by([{**here, "threads": 1, "epochs": [1, 3]}], {**here, "threads": 2}, 5)
    plain = trained_by([], {**here, "threads": threads}, 5)
    done = {"a": _run(2, mixed), "b": _run(threads, plain)}
    with pytest.warns(UserWarning, match=rf"^1 run\(s\) read from the store were trained with {3 - threads} torch "
                                         rf"thread\(s\), this experiment trains with {threads}"):
        warn_other_threads(done, threads, CPU)  # type: ignore[arg-type]


def test_runs_all_at_this_count_say_nothing() -> None:
    here = {"cpu": "X", "cpu_capability": "AVX512", "cpus": 2, "arch": "x86_64"}
    done = {"a": _run(2, trained_by([{**here, "threads": 2, "epochs": [1, 3]}], {**here, "threads": 2}, 5)),
            "b": _run(2, {**here, "epochs": [1, 5]})}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_threads(done, 2, CPU)  # type: ignore[arg-type]
