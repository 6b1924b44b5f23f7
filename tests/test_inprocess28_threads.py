"""`--executor inprocess --threads T` above the usable CPUs warns, as local and ray do (it said nothing)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from harness.executors import inprocess
from harness.executors.inprocess import InProcessExecutor


def _warnings(threads: int | None, cpus: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(inprocess, "usable_cpus", lambda: cpus)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        InProcessExecutor.from_config(SimpleNamespace(threads=threads, progress=False))  # type: ignore[arg-type]
    return [str(w.message) for w in caught]


def test_more_threads_than_usable_cpus_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _warnings(4, 2, monkeypatch) == [
        "1 worker(s) x 4 torch thread(s) = 4 threads on 2 usable CPU(s): they will compete for the CPUs and every "
        "run slows down; lower --threads (see 'Threads and workers' in docs/executors.md)"]  # no --workers here


@pytest.mark.parametrize(("threads", "cpus"), [(None, 1), (1, 1), (2, 2), (2, 8)])
def test_threads_within_the_usable_cpus_say_nothing(threads: int | None, cpus: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert _warnings(threads, cpus, monkeypatch) == []
