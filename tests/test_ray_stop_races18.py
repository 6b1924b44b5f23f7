"""Races in stopping a Ray run (test_ray_leave18): the stop watcher of a job on the caller's own
connection when the job ends just as the watcher interrupts it, and a run started after a stop
whose leave of a hung cluster was given up; and the interrupt path on a real cluster.

The watcher held its guard while it called `_thread.interrupt_main()`; the job, ending meanwhile,
waited on the guard to say so, and the interrupt then surfaced in the `Event.set` that says it
(a Python call: the first point that raises a pending interrupt), so the job never said it had
ended. STOP_GRACE_S later the watcher killed its worker, which by then was idle or running the
next task Ray gave it (a job of this run, or the caller's own work on the same connection).

A leave of a hung cluster given up at a stop (Ctrl-C) cleared `_joined` with the connection still
up: the next run in the process took it for the caller's own and ran on it, whatever it asked for;
only a leave given up in `_init` itself was refused."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest

pytest.importorskip("ray")

from test_ray_joined17 import HEAD, OTHER, stand_in  # noqa: E402
from test_ray_leave18 import HungRay, head  # noqa: E402,F401  (head: a fixture, a real `ray start` cluster)
from test_ray_safety import run_driver  # noqa: E402

import harness.executors.ray as ray_executor  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.executors import ray_jobs  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402


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


# a Ctrl-C whose leave hung, then another run in the same process ----------------------------------
@pytest.mark.parametrize("then", [HEAD, OTHER, None])
def test_a_run_after_a_stop_whose_leave_hung_is_refused_until_the_leave_ends(monkeypatch, then) -> None:
    """The given-up leave set `_joined` to None while the connection stayed up (half shut down):
    the next run took it for a connection the caller made and ran on it, whatever it asked for (a
    local run, or another cluster, on the hung one). `_init` refused this only when the leave hung
    in `_init` itself."""
    hung = HungRay()
    stand_in(monkeypatch, hung)
    monkeypatch.setattr(ray_executor, "LEAVE_WAIT_S", 0.3)
    executor = RayExecutor(address=HEAD, progress=False)
    executor.start()
    try:
        executor._stop({"ref-a": None})  # type: ignore[dict-item]  # the Ctrl-C: its leave hangs, given up
        with pytest.raises(HarnessError, match="does not answer and could not be left"):
            RayExecutor(address=then, progress=False).start()
        assert hung.calls == [("join", HEAD), "shutdown"]
    finally:
        hung.release.set()
    deadline = time.monotonic() + 10
    while hung.up and time.monotonic() < deadline:  # the head answers again: the leave ends
        time.sleep(0.01)
    RayExecutor(address=then, progress=False).start()
    assert hung.calls[-1] == (("join", then) if then else "start local") and hung.up


# the interrupt path in a real Ray worker ------------------------------------------------------------
#: A driver on its own connection: a job running Python is asked to stop; what happened, how fast, and
#: whether its worker lived on past STOP_GRACE_S (it should: the interrupt stopped the job).
SPINNING_DRIVER = """
import json, os, sys, time
from pathlib import Path

import psutil
import ray

from harness.executors.ray_jobs import STOP_GRACE_S, _call, ask_to_stop

out = Path(sys.argv[2])


def spin(seconds):
    (out / "pid").write_text(str(os.getpid()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


ray.init(address=sys.argv[1], log_to_driver=False)
task = ray.remote(_call).options(num_cpus=1, max_retries=1, retry_exceptions=False)
ref = task.remote(spin, 600.0, "", "stop-spin")
while not (out / "pid").exists():
    time.sleep(0.1)
pid = int((out / "pid").read_text())
time.sleep(1)
start = time.monotonic()
ask_to_stop("stop-spin")
try:
    ray.get(ref, timeout=60)
    outcome = "finished"
except ray.exceptions.TaskCancelledError:
    outcome = "cancelled"
except Exception as e:
    outcome = type(e).__name__
seconds = time.monotonic() - start
time.sleep(STOP_GRACE_S + 2)
print(json.dumps({"outcome": outcome, "seconds": seconds, "worker alive": psutil.pid_exists(pid)}), flush=True)
ray.shutdown()
"""


@pytest.mark.slow  # 12 s: a real cluster; the stop is checked on a stand-in above
def test_a_job_running_python_on_a_real_cluster_stops_when_asked_and_keeps_its_worker(head) -> None:  # noqa: F811
    """The interrupt path (test_ray_leave18's real cluster tests only the kill, for a sleeping job):
    the watcher thread's `interrupt_main` reaches the task in Ray's worker, which Ray reports as
    cancelled, within STOP_POLL_S, and the worker is not killed after."""
    driver = head["root"] / "driver"
    driver.mkdir()
    seen = run_driver(SPINNING_DRIVER, driver, head, timeout=180)
    assert seen["outcome"] == "cancelled" and seen["seconds"] < ray_jobs.STOP_GRACE_S, seen
    assert seen["worker alive"], seen
