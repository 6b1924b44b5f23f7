"""The waiting line counts the runs still held (attsh30): of 3 runs another process held when this experiment
claimed them, one let go by the time it began waiting read 'waiting for 3 run(s)'; it is read back without a wait,
and the line says 2. A run through `Runner.run` with an executor that trains nothing (the other process's runs
are never stored here: each is claimed again afterwards and handed to it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import harness.runner
from harness.errors import Interrupted
from harness.recipe import Recipe
from harness.runner import Runner
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore


class _Idle:
    """An executor that trains nothing; its first `run` (after the claims) waits for `between` to be done."""

    def __init__(self, between: threading.Event, claimed: threading.Event) -> None:
        self.between, self.claimed, self.calls = between, claimed, 0

    def start(self) -> None:
        pass

    def run(self, jobs: list) -> Iterator:
        self.calls += 1
        if self.calls == 1:
            self.claimed.set()
            assert self.between.wait(60)
        return iter(())

    def close(self) -> None:
        pass

    def take_finished(self) -> list:
        return []


def test_a_run_let_go_before_the_wait_is_not_counted(tmp_path, monkeypatch, capfd) -> None:
    specs = [RunSpec(DataSpec(), "mlp", Recipe(), seed) for seed in range(3)]
    first = min(specs, key=lambda s: s.digest())  # the runner waits in the order it planned: sorted here
    specs.sort(key=lambda s: s != first)
    store, other = RunStore(tmp_path / "store"), RunStore(tmp_path / "store")  # other: as another process's locks
    store.create()
    taken, claimed, freed, blocking = (threading.Event() for _ in range(4))
    real = harness.runner._acquire

    def acquire(lock, timeout: float = -1) -> None:
        if timeout < 0:
            blocking.set()
        real(lock, timeout)

    monkeypatch.setattr(harness.runner, "_acquire", acquire)

    def holder() -> None:
        locks = [other.lock(s) for s in specs]
        for lock in locks:
            lock.acquire()
        taken.set()
        claimed.wait(60)
        locks[0].release()  # stored by then, in the other process: let go before this one waits
        freed.set()
        blocking.wait(60)
        for lock in locks[1:]:
            lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    assert taken.wait(60)
    try:
        executor = _Idle(freed, claimed)
        todo = [(spec, set()) for spec in specs]
        Runner(store, executor, {s: set() for s in specs}, lambda pending: []).run({}, todo)  # type: ignore[arg-type]
    finally:
        claimed.set(), freed.set(), blocking.set()
        thread.join(60)
    err = capfd.readouterr().err
    assert err.count("waiting for") == 1 and "waiting for 2 run(s) another process" in err


def test_ctrl_c_while_waiting_counts_no_checkpoint_of_the_other_process(tmp_path, monkeypatch) -> None:
    """Stopped while it waited, an experiment that trained nothing said 'and 1 partly trained run checkpointed':
    the other process's live checkpoint. One left by an earlier killed run (its lock free) still counts."""
    theirs, left = RunSpec(DataSpec(), "mlp", Recipe(), 0), RunSpec(DataSpec(), "mlp", Recipe(), 1)
    store, other = RunStore(tmp_path / "store"), RunStore(tmp_path / "store")
    store.create()
    for spec in (theirs, left):
        store.checkpoint_path(spec).parent.mkdir(parents=True, exist_ok=True)
        store.checkpoint_path(spec).write_bytes(b"checkpoint")
    real = harness.runner._acquire

    def acquire(lock, timeout: float = -1) -> None:
        if timeout < 0:
            raise KeyboardInterrupt  # Ctrl-C while blocked on the other process's lock
        real(lock, timeout)

    monkeypatch.setattr(harness.runner, "_acquire", acquire)
    taken, done = threading.Event(), threading.Event()

    def holder() -> None:
        lock = other.lock(theirs)
        lock.acquire()
        taken.set()
        done.wait(60)
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    assert taken.wait(60)
    try:
        with pytest.raises(Interrupted) as stopped:
            Runner(store, _Idle(_set(), threading.Event()), {theirs: set(), left: set()},
                   lambda pending: []).run({}, [(theirs, set()), (left, set())])  # type: ignore[arg-type]
    finally:
        done.set()
        thread.join(60)
    assert (stopped.value.kept_runs, stopped.value.checkpointed) == (0, 1)


def _set() -> threading.Event:
    event = threading.Event()
    event.set()
    return event
