"""The planner's notice that stored runs train again to add recorders they lack (planner24): one
line, before any job starts, naming how many runs, which recorders, who asked for them and how to do
without them; none when the store holds everything; the suspects task's way out folded into it."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest

import harness.jobs
from harness.experiment import Experiment
from harness.recorders.class_prob import SUGGEST
from harness.runspec import RunSpec

MARKER = "planner24: a job starts"
NOTICE = "lack recorder(s)"


@pytest.fixture
def tiny(make_config) -> Callable:
    """The tiniest experiment: 300 digits, one epoch, one seed, in this process."""
    return lambda **kw: make_config(**{"subset": 300, "epochs": 1, "out": None, **kw})


@pytest.fixture
def job_marker(monkeypatch) -> None:
    """Every job announces its start as a warning, so the order against the notice can be asserted."""
    run_job = harness.jobs.run_job

    def marked(job):
        warnings.warn(MARKER)
        return run_job(job)

    monkeypatch.setattr(harness.jobs, "run_job", marked)


def _run(cfg) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Experiment(cfg).run()
    return [str(w.message) for w in caught]


def test_a_run_stored_for_one_proxy_trains_again_for_another_after_one_line(tiny, job_marker) -> None:
    first = _run(tiny(proxies="csl"))
    assert first.count(MARKER) == 1 and not [m for m in first if NOTICE in m]
    messages = _run(tiny(proxies="csl,final_loss"))
    notices = [m for m in messages if NOTICE in m]
    assert len(notices) == 1
    (line,) = notices
    assert line.startswith("1 stored run(s) (digits noise=0.1 mlp seed0) lack recorder(s) "
                           "eval_pass[epochs=last] (asked by final_loss): ")
    assert "train again in full" in line and "recording their other signals again" in line
    assert line.endswith("; to avoid it, drop final_loss from --proxies")
    assert messages.count(MARKER) == 1 and messages.index(line) < messages.index(MARKER)  # said before training
    again = _run(tiny(proxies="csl,final_loss"))  # everything stored now: no notice, nothing trains
    assert MARKER not in again and not [m for m in again if NOTICE in m]


def test_the_suspects_hint_is_given_once_in_the_one_line(tiny, job_marker) -> None:
    _run(tiny(tasks=("suspects",), task_args={"suspects": {"suggest": "off", "duplicates": "off"}}))
    messages = _run(tiny(tasks=("suspects",), task_args={"suspects": {"duplicates": "off"}}))
    hinted = [m for m in messages if "suspects.suggest=off" in m]
    assert len(hinted) == 1 and [m for m in messages if NOTICE in m] == hinted
    (line,) = hinted
    assert line.startswith(f"1 stored run(s) (digits clean mlp seed0) lack recorder(s) {SUGGEST.key} "
                           "(asked by task suspects): ")
    assert line.endswith("; to avoid it, pass --task-arg suspects.suggest=off to reuse them without the suggested "
                         "label's columns")
    assert messages.index(line) < messages.index(MARKER)


def _spec(make_config, seed: int) -> RunSpec:
    exp = Experiment(make_config(subset=300, out=None, seeds=(seed,)))
    return next(iter(exp.plan.runs))


def test_many_runs_are_counted_and_a_task_without_a_way_out_offers_none(make_config) -> None:
    from harness.upgrade_notice import upgrade_notice

    specs = [_spec(make_config, seed) for seed in range(5)]
    askers = {s: {"a": {("proxy", "csl")}, "b": {("task", "cost")}} for s in specs}
    line = upgrade_notice({s: {"a", "b"} for s in specs}, askers, [])
    assert line is not None and line.startswith(
        "5 stored run(s) (digits noise=0.1 mlp seed0, digits noise=0.1 mlp seed1, "
        "digits noise=0.1 mlp seed2 and 2 more) lack recorder(s) a (asked by csl), b (asked by task cost): ")
    assert "to avoid it" not in line  # dropping csl alone would not do: cost asks for b
    assert upgrade_notice({s: {"a"} for s in specs}, askers, []).endswith("; to avoid it, drop csl from --proxies")
    assert upgrade_notice({s: set() for s in specs}, askers, []) is None
