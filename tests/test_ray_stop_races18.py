"""Races in stopping a Ray run (test_ray_leave18): the stop watcher of a job on the caller's own
connection when the job ends just as the watcher interrupts it.

The watcher held its guard while it called `_thread.interrupt_main()`; the job, ending meanwhile,
waited on the guard to say so, and the interrupt then surfaced in the `Event.set` that says it
(a Python call: the first point that raises a pending interrupt), so the job never said it had
ended. STOP_GRACE_S later the watcher killed its worker, which by then was idle or running the
next task Ray gave it (a job of this run, or the caller's own work on the same connection)."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest

pytest.importorskip("ray")

from harness.executors import ray_jobs  # noqa: E402


def test_an_interrupt_sent_as_the_job_ends_surfaces_in_the_task_and_kills_no_worker_after(monkeypatch) -> None:
    asked: dict[str, bool] = {}
    monkeypatch.setattr(ray_jobs, "_stop_asked", lambda key: asked.get(key, False))
    monkeypatch.setattr(ray_jobs, "STOP_POLL_S", 0.02)
    monkeypatch.setattr(ray_jobs, "STOP_GRACE_S", 0.3)
    kills: list[bool] = []
    monkeypatch.setattr(ray_jobs, "_kill_worker", lambda: kills.append(True))
    sending = threading.Event()
    interrupt = _thread.interrupt_main

    def slow_interrupt(signum: signal.Signals = signal.SIGINT) -> None:
        """The watcher decided to interrupt; the job ends before the interrupt is sent."""
        sending.set()
        time.sleep(0.2)
        interrupt(signum)

    monkeypatch.setattr(ray_jobs._thread, "interrupt_main", slow_interrupt)

    def job(_: object) -> str:
        asked["stop-1"] = True
        assert sending.wait(5)
        return "done"

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in Ray's workers (xdist's ignore it)
    landed = "nowhere"
    try:
        try:
            ray_jobs._call(job, None, "", "stop-1")  # type: ignore[arg-type]
            landed = "after the task"
            time.sleep(1.0)  # Ray's worker loop, or the next task this worker runs
        except KeyboardInterrupt:
            landed = "in the task" if landed == "nowhere" else landed
    finally:
        signal.signal(signal.SIGINT, previous)
    time.sleep(ray_jobs.STOP_GRACE_S + 0.3)
    assert landed == "in the task"  # Ray reports a cancelled task, its worker kept
    assert kills == [], "the worker was killed after its job had ended"

