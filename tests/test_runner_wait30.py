"""An experiment waiting for runs another process on the store is training says so, once (it printed nothing,
for as long as the other's runs took)."""

from __future__ import annotations

import threading

import harness.runner
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore


def _held_then_let_go(locks: list, blocking: threading.Event, done: threading.Event) -> None:
    for lock in locks:
        lock.acquire()
    done.set()
    blocking.wait(60)  # let go only once the waiter blocks: it must have found them held
    for lock in locks:
        lock.release()


def test_waiting_for_another_process_is_said_once(tmp_path, monkeypatch, capfd) -> None:
    store = RunStore(tmp_path / "store")
    store.create()
    specs = [RunSpec(DataSpec(), "mlp", Recipe(), seed) for seed in range(2)]
    other = RunStore(tmp_path / "store")  # other lock objects, as another process's
    blocking, taken = threading.Event(), threading.Event()
    real = harness.runner._acquire

    def acquire(lock, timeout: float = -1) -> None:
        if timeout < 0:
            blocking.set()
        real(lock, timeout)

    monkeypatch.setattr(harness.runner, "_acquire", acquire)
    holder = threading.Thread(target=_held_then_let_go, args=([other.lock(s) for s in specs], blocking, taken))
    holder.start()
    assert taken.wait(60)
    try:
        told = False
        for spec in specs:
            lock = store.lock(spec)
            told = harness.runner._wait_for(lock, len(specs), told)
            lock.release()
    finally:
        blocking.set()
        holder.join(60)
    err = capfd.readouterr().err
    assert err.count("waiting for 2 run(s) another process on this store is training") == 1
    assert told


def test_a_free_lock_is_taken_without_a_word(tmp_path, capfd) -> None:
    store = RunStore(tmp_path / "store")
    store.create()
    lock = store.lock(RunSpec(DataSpec(), "mlp", Recipe(), 0))
    assert harness.runner._wait_for(lock, 1, False) is False
    lock.release()
    assert capfd.readouterr().err == ""


def test_told_once_means_not_again(tmp_path, capfd) -> None:
    store = RunStore(tmp_path / "store")
    store.create()
    lock = store.lock(RunSpec(DataSpec(), "mlp", Recipe(), 0))
    assert harness.runner._wait_for(lock, 1, True) is True
    lock.release()
    assert capfd.readouterr().err == ""
