"""Ctrl-C keeps every run that had finished (review 19): before, a result the driver was storing and
those workers finished meanwhile were dropped with the workers, and the rerun trained them again.

The local pool is made deterministic: the first job to start finishes at once, the others wait until
the driver stores its first result (`GATE`), and that store waits until a second result lies in a
worker's pipe before Ctrl-C "arrives" (KeyboardInterrupt raised in the store write, where the
driver spends its time between results).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from _processes import wait_until

from harness.errors import Interrupted
from harness.executors.inprocess import InProcessExecutor
from harness.executors.local import LocalExecutor
from harness.experiment import Experiment
from harness.jobs import Job, JobResult, run_job
from harness.store import RunStore

SEEDS = (0, 1, 2)  # 3 jobs of one run each: 2 start, the third waits for a free worker
PROXIES = "csl,final_loss,confident_learning"  # 2 jobs: the 3 folds together, and the base run


# job functions the workers import from this module -------------------------------------------
def first_then_gated(gate: str, job: Job) -> JobResult:
    """The first job to start trains at once; every other one waits until `gate` exists."""
    try:
        os.close(os.open(gate + ".first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        wait_until(lambda: os.path.exists(gate), 300)
    return run_job(job)


# helpers ----------------------------------------------------------------------------------------
def _ready_in_a_pipe(executor: LocalExecutor) -> bool:
    return any(w.conn.poll(0) for w in executor._pool if w.job is not None)


def _interrupting_put(monkeypatch: pytest.MonkeyPatch, interrupt_at: set[int],
                      before_first: Callable[[], None] = lambda: None) -> list[str]:
    """RunStore.put raising KeyboardInterrupt (a Ctrl-C) at the calls numbered in `interrupt_at`
    (1-based), `before_first` run at the first call; returns the labels put, in call order."""
    real = RunStore.put
    calls: list[str] = []

    def put(self, spec, arrays, manifest):  # type: ignore[no-untyped-def]
        calls.append(spec.label())
        if len(calls) == 1:
            before_first()
        if len(calls) in interrupt_at:
            raise KeyboardInterrupt
        return real(self, spec, arrays, manifest)

    monkeypatch.setattr(RunStore, "put", put)
    return calls


def _gated_pool(tmp_path: Path) -> tuple[LocalExecutor, Callable[[], None]]:
    """A 2-worker pool running `first_then_gated`, and what the first store write does: open the
    gate, then wait until the second job's result has been sent."""
    gate = tmp_path / "gate"
    executor = LocalExecutor(workers=2, progress=False, fn=partial(first_then_gated, str(gate)))

    def open_gate_and_wait() -> None:
        gate.write_text("the driver is storing its first result")
        assert wait_until(lambda: _ready_in_a_pipe(executor), 300), "the second job never finished"

    return executor, open_gate_and_wait


def _leftovers(store: Path) -> list[str]:
    """Temporary entries a write left in the store (there must be none: writes are atomic)."""
    return [p.name for p in (store / "runs").rglob(".*")] if (store / "runs").is_dir() else []


# the local pool ---------------------------------------------------------------------------------
def test_ctrl_c_while_storing_keeps_that_run_and_the_one_finished_meanwhile(make_config, tmp_path,
                                                                            monkeypatch, capsys) -> None:
    cfg = make_config(executor="local", workers=2, epochs=2, seeds=SEEDS)
    executor, first = _gated_pool(tmp_path)
    calls = _interrupting_put(monkeypatch, {1}, first)
    exp = Experiment(cfg, executor=executor)
    with pytest.raises(Interrupted) as info:
        exp.run()
    assert executor._pool == []  # the workers were stopped all the same
    kept = [spec for spec in exp.plan.runs if exp.store.get(spec) is not None]
    assert len(kept) == 2 and info.value.kept_runs == 2  # before: 0, both finished runs dropped
    assert calls[0] == calls[1] and {s.label() for s in kept} == set(calls[1:])  # the interrupted one again
    assert "storing the 2 runs that had finished" in capsys.readouterr().err
    assert _leftovers(cfg.store) == []

    monkeypatch.undo()
    rerun = Experiment(cfg, executor=InProcessExecutor(progress=False)).run()
    assert sorted(rerun.reused) == sorted(s.label() for s in kept)  # the rerun trains only the third
    assert len(rerun.trained) == 1 and not set(rerun.trained) & set(rerun.reused)


def test_a_second_ctrl_c_while_keeping_stops_at_once_and_keeps_what_was_stored(make_config, tmp_path,
                                                                               monkeypatch) -> None:
    """Ctrl-C at the 1st write, again at the 3rd (the second finished run): the run stops there, with
    the one run stored by the 2nd write kept whole and nothing half-written."""
    cfg = make_config(executor="local", workers=2, epochs=2, seeds=SEEDS)
    executor, first = _gated_pool(tmp_path)
    calls = _interrupting_put(monkeypatch, {1, 3}, first)
    exp = Experiment(cfg, executor=executor)
    with pytest.raises(Interrupted) as info:
        exp.run()
    assert len(calls) == 3 and executor._pool == []
    kept = [spec.label() for spec in exp.plan.runs if exp.store.get(spec) is not None]
    assert kept == [calls[1]] and info.value.kept_runs == 1
    assert _leftovers(cfg.store) == []
    monkeypatch.undo()
    rerun = Experiment(cfg, executor=InProcessExecutor(progress=False)).run()
    assert rerun.reused == kept and len(rerun.trained) == 2


def test_results_a_worker_sent_before_the_pool_is_stopped_are_read_not_dropped(tmp_path) -> None:
    """Closing the iterator (Ctrl-C in the consumer) reads what the workers had finished; a job still
    training is not waited for."""
    gate = tmp_path / "gate"
    executor = LocalExecutor(workers=2, progress=False, fn=partial(first_then_gated, str(gate)))
    jobs = _jobs(3)
    try:
        outcomes = executor.run(jobs)
        handed = next(outcomes)
        gate.write_text("open")
        assert wait_until(lambda: _ready_in_a_pipe(executor), 300)
        outcomes.close()
        finished = executor.take_finished()
    finally:
        executor.close()
    assert finished[0] is handed and len(finished) == 2  # the third job never started
    assert all(isinstance(outcome, JobResult) and outcome.outputs for _, outcome in finished)
    assert {job.label() for job, _ in finished} < {job.label() for job in jobs}
    assert executor.take_finished() == []


# in this process --------------------------------------------------------------------------------
def test_in_process_ctrl_c_while_storing_a_job_of_three_runs_keeps_all_three(make_config, monkeypatch) -> None:
    """Ctrl-C at the second run of the folds' job: that run and the third are stored too, the first once."""
    cfg = make_config(epochs=2, proxies=PROXIES)
    calls = _interrupting_put(monkeypatch, {2})
    exp = Experiment(cfg)
    with pytest.raises(Interrupted) as info:
        exp.run()
    kept = sorted(spec.label() for spec in exp.plan.runs if exp.store.get(spec) is not None)
    assert len(calls) == 4 and calls[1] == calls[2] and len(set(calls)) == 3
    assert kept == sorted(set(calls)) and info.value.kept_runs == 3  # before: 1


def test_executors_that_keep_nothing_still_keep_the_run_being_stored(make_config, monkeypatch) -> None:
    """An executor that keeps no finished outcomes (`Executor.take_finished`'s default []): the run
    the driver was storing is kept all the same."""

    class Plain(InProcessExecutor):
        def take_finished(self) -> list:
            return []

    cfg = make_config(epochs=2)
    _interrupting_put(monkeypatch, {1})
    exp = Experiment(cfg, executor=Plain(progress=False))
    with pytest.raises(Interrupted) as info:
        exp.run()
    assert info.value.kept_runs == 1 and all(exp.store.get(spec) is not None for spec in exp.plan.runs)


def _jobs(n: int) -> list[Job]:
    from harness.jobs import DataSource
    from harness.recipe import Recipe
    from harness.runspec import DataSpec, RunSpec

    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=1,
                    schedule="cosine", milestones=(), augment=False)
    return [Job(specs=(RunSpec(DataSpec(), "mlp", recipe, seed),), requests=(), engine="single",
                source=DataSource("digits")) for seed in range(n)]


def test_a_write_that_fails_while_keeping_is_one_line_and_the_run_still_ends_interrupted(
        make_config, monkeypatch, capsys) -> None:
    """Not exit 1 with the StorageError: the user's Ctrl-C decides how the run ends (130)."""
    from harness.errors import StorageError

    real = RunStore.put
    calls: list[str] = []

    def put(self, spec, arrays, manifest):  # type: ignore[no-untyped-def]
        calls.append(spec.label())
        if len(calls) == 1:
            raise KeyboardInterrupt
        if len(calls) == 2:
            raise StorageError("cannot write run store entry X (No space left on device)")
        return real(self, spec, arrays, manifest)

    monkeypatch.setattr(RunStore, "put", put)
    exp = Experiment(make_config(epochs=2))
    with pytest.raises(Interrupted) as info:
        exp.run()
    assert info.value.kept_runs == 0 and len(calls) == 2
    assert "error: cannot write run store entry X (No space left on device)" in capsys.readouterr().err
