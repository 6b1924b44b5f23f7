"""Two experiments started together on one store (shared30): the second finds the runs missing when it plans,
waits for the first's locks and reads back what the first stored. Those runs were reused without the lines a
later rerun prints: an experiment at `--threads 2` beside one at 1 thread reported the other's 1-thread numbers
(on digits, the same leaderboard bytes as a rerun that warns "4 run(s) read from the store were trained with 1
torch thread(s)") and said nothing. `Planner.warn_read_back` says it for the runs read back after waiting; the
experiment has to call it once the runner is done (`harness/experiment.py`, `Experiment.execute`). The same
call tells of runs resumed from a checkpoint written at another thread count.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from types import SimpleNamespace

import pytest
import torch

from harness.experiment import Experiment
from harness.plan_checks import READ_BACK, RESUMED
from harness.planner import Plan, Planner
from harness.recipe import Recipe
from harness.runner import RunnerResult
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore


def _spec(seed: int) -> RunSpec:
    return RunSpec(DataSpec(), "mlp", Recipe(), seed)


def _run(threads: int) -> SimpleNamespace:
    manifest = SimpleNamespace(threads=threads, device="cpu", machine={"threads": threads}, engine="single",
                               compiled=False)
    return SimpleNamespace(manifest=manifest)


def _planner(threads: int) -> Planner:
    planner = Planner.__new__(Planner)  # the warnings read only these
    planner.cfg = SimpleNamespace(threads=threads, compile=False)  # type: ignore[assignment]
    planner.device = torch.device("cpu")
    planner.dataset = SimpleNamespace(x_train=torch.zeros(4, 8))  # type: ignore[assignment]
    return planner


def test_only_the_runs_read_back_after_waiting_are_counted() -> None:
    """Of four runs at 1 thread, for an experiment at 2: one was stored when it planned (`pending` said so
    already), one it trained itself, two another process stored while it waited: the line counts those two."""
    specs = [_spec(s) for s in range(4)]
    plan = Plan(settings=[], runs={spec: set() for spec in specs})
    done = {specs[0]: _run(1)}
    ran = RunnerResult(runs={spec: _run(1) for spec in specs}, reused=[specs[0].label(), specs[2].label(),
                                                                     specs[3].label()], trained=[specs[1].label()])
    with pytest.warns(UserWarning) as caught:
        _planner(2).warn_read_back(plan, done, ran)  # type: ignore[arg-type]
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"2 run(s) {READ_BACK} were trained with 1 torch thread(s), this experiment trains with 2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _planner(1).warn_read_back(plan, done, ran)  # type: ignore[arg-type]  # at their own count: nothing


def test_a_run_resumed_from_a_checkpoint_of_another_thread_count_is_told() -> None:
    """A run killed at 1 thread (the other experiment, killed while this one waited) and resumed here at 2: its
    first epochs are 1 thread's. Checked by hand: 800-epoch digits runs, the first killed at epoch 13, the rerun
    at --threads 2 said "1 resumed from their checkpoints" and nothing about threads; a third run warned."""
    spec, fresh = _spec(0), _spec(1)
    mixed = _run(2)
    mixed.manifest.machine = {"threads": 2, "earlier": [{"threads": 1, "epochs": [1, 13]}], "epochs": [14, 800]}
    plan = Plan(settings=[], runs={spec: set(), fresh: set()})
    ran = RunnerResult(runs={spec: mixed, fresh: _run(2)}, trained=[spec.label(), fresh.label()],
                       resumed={spec.label(): 13})
    with pytest.warns(UserWarning) as caught:
        _planner(2).warn_read_back(plan, {}, ran)  # type: ignore[arg-type]
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"1 run(s) {RESUMED} were trained with 1 torch thread(s), this experiment trains with 2"]


def test_an_experiment_that_waited_for_another_threads_runs_is_told(make_config, tmp_path) -> None:
    """The user journey, in one process: runs trained at 1 thread into another store (the other experiment's
    work), an experiment at 2 threads planned on an empty store whose locks are held, the entries put in place
    under those locks and the locks let go. It reads all of them back, and must say they are 1 thread's."""
    Experiment(make_config(threads=1, store=tmp_path / "first", out=None)).run()
    second = Experiment(make_config(threads=2, out=None))
    store, first = RunStore(tmp_path / "store"), RunStore(tmp_path / "first")
    specs = sorted(second.plan.runs, key=lambda s: s.digest())
    held = [store.lock(spec) for spec in specs]  # another RunStore: other lock objects, as another process's
    store.create()
    taken, planned = threading.Event(), threading.Event()
    pending = second.planner.pending

    def pending_then_signal(plan: Plan):  # the store is looked at (empty): the other experiment may store now
        try:
            return pending(plan)
        finally:
            planned.set()

    second.planner.pending = pending_then_signal  # type: ignore[method-assign]

    def other_experiment() -> None:  # in a thread of its own: filelock refuses a second holder in one thread
        for lock in held:
            lock.acquire()
        taken.set()
        planned.wait(60)
        for spec in specs:
            shutil.copytree(first.root / "runs" / spec.digest(), store.root / "runs" / spec.digest())
        for lock in held:
            lock.release()

    helper = threading.Thread(target=other_experiment)
    helper.start()
    assert taken.wait(60)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ran = second.execute()
    finally:
        planned.set()
        helper.join(60)
    assert ran.trained == [] and sorted(ran.reused) == sorted(spec.label() for spec in specs)
    lines = [str(w.message) for w in caught if "torch thread(s)" in str(w.message)]
    assert [line.split(":")[0] for line in lines] == [
        f"{len(specs)} run(s) {READ_BACK} were trained with 1 torch thread(s), this experiment trains with 2"]
