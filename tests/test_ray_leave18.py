"""Stopping a Ray run (issue 18): leaving a cluster memprox joined when its head does not
answer, and stopping the jobs on a connection the caller made without `ray.cancel`.

One failed 1-second probe of the head made `_stop` skip leaving the cluster, so the run's jobs ran
on until the process ended (in a notebook: for good). The leave is now made whatever a probe says,
and bounded: `ray.shutdown()` took 0.3 s with the head up, 5 s with the head's processes killed
and did not return in 150 s with the head hung (its processes stopped: TCP still connects), so it
runs in a thread for LEAVE_WAIT_S at most. On the caller's own connection `ray.cancel` (force or
not) races a job that has just finished (ray-project/ray#54846) and aborted the driver in 2 of 30
SIGINTs each here; the jobs now stop themselves when a key in Ray's store asks them to. Choices
are tested with the stand-in Ray of test_ray_joined17; heads killed and hung, and a job stopping
itself, on a real `ray start` cluster."""

from __future__ import annotations

import atexit
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("ray")

from test_ray_joined17 import HEAD, FakeRay, stand_in
from test_ray_safety import LEAVING_DRIVER, REPO, env_for, kill_session, run_driver, session, token_head  # noqa: E402

import harness.executors.ray as ray_executor  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.executors import ray_jobs  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402
from harness.executors.ray_leave import shutdown_within  # noqa: E402


@pytest.fixture
def fake(monkeypatch) -> FakeRay:
    return stand_in(monkeypatch, FakeRay())


def test_a_head_that_misses_one_probe_is_still_left(fake, monkeypatch) -> None:
    """A blip (a probe lost to a busy head or network) skipped the leave: the jobs ran on."""
    executor = RayExecutor(address=HEAD, progress=False)
    executor.start()
    monkeypatch.setattr(ray_executor, "_head_answers", lambda head: False)
    executor._stop({"ref-a": None})  # type: ignore[dict-item]
    assert fake.calls == [("join", HEAD), "shutdown"] and not fake.up and ray_executor._joined is None


class HungRay(FakeRay):
    """A Ray whose shutdown does not return until `release` is set: a hung head."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.release.wait(30)
        self.up = False


def test_a_leave_that_hangs_ends_the_stop_within_its_bound(monkeypatch, capsys) -> None:
    hung = stand_in(monkeypatch, HungRay())
    monkeypatch.setattr(ray_executor, "LEAVE_WAIT_S", 0.3)
    executor = RayExecutor(address=HEAD, progress=False)
    executor.start()
    stopping = threading.Thread(target=executor._stop, args=({"ref-a": None},), daemon=True)
    try:
        stopping.start()
        stopping.join(10)
        assert not stopping.is_alive(), "the stop waited on the hung shutdown"
    finally:
        hung.release.set()
    assert hung.calls == [("join", HEAD), "shutdown"] and ray_executor._joined is None
    assert "could not leave the Ray cluster at 10.0.0.5:6379 within 0 s" in capsys.readouterr().err


def test_a_run_elsewhere_after_a_hung_leave_is_refused(monkeypatch) -> None:
    """Ray's next connect would wait on the hung shutdown; the run ran on the silent cluster instead."""
    hung = stand_in(monkeypatch, HungRay())
    monkeypatch.setattr(ray_executor, "LEAVE_WAIT_S", 0.3)
    RayExecutor(address=HEAD, progress=False).start()
    try:
        with pytest.raises(HarnessError, match="does not answer and could not be left"):
            RayExecutor(address="10.0.0.9:6379", progress=False).start()
    finally:
        hung.release.set()


def test_the_callers_own_connection_is_asked_whatever_a_probe_says_within_the_bound(fake, monkeypatch,
                                                                                   capsys) -> None:
    """A connection the caller made is not memprox's to leave: its jobs are asked to stop, also
    after a failed probe of the head (before: not asked, the jobs ran on), and a request the head
    does not take ends the stop with a line."""
    fake.connect()
    monkeypatch.setattr(ray_executor, "_head_answers", lambda head: False)
    executor = RayExecutor(progress=False)
    executor.head, executor._stop_key = ("10.0.0.5", 6379), "stop-1"
    executor._stop({"ref-a": None})  # type: ignore[dict-item]
    assert fake.calls == [("ask to stop", "stop-1"), ("forget stop", "stop-1")] and fake.up
    release = threading.Event()
    monkeypatch.setattr(ray_executor, "ask_to_stop", lambda key: release.wait(30))
    monkeypatch.setattr(ray_executor, "LEAVE_WAIT_S", 0.3)
    try:
        executor._stop({"ref-a": None})  # type: ignore[dict-item]
    finally:
        release.set()
    assert "could not ask this run's Ray jobs to stop within 0 s" in capsys.readouterr().err


class _Worker:
    """The shape `_skip_exit_shutdown` looks for: `ray._private.worker.shutdown`."""

    def __init__(self, shutdown: object) -> None:
        self.worker = type("Worker", (), {"shutdown": staticmethod(shutdown)})()


def test_shutdown_within_returns_passes_errors_and_gives_up(monkeypatch) -> None:
    ok = type("Ray", (), {"shutdown": staticmethod(lambda: None)})()
    assert shutdown_within(ok, 5) is True

    def broken() -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        shutdown_within(type("Ray", (), {"shutdown": staticmethod(broken)})(), 5)
    release = threading.Event()
    hung = type("Ray", (), {"shutdown": staticmethod(lambda: release.wait(30))})()

    def at_exit() -> None:
        """Stands for Ray's own exit shutdown, which would wait on the hung one's lock."""

    hung._private = _Worker(at_exit)
    dropped: list[object] = []
    monkeypatch.setattr(atexit, "unregister", dropped.append)
    try:
        assert shutdown_within(hung, 0.2) is False
        assert dropped == [at_exit]  # the exit no longer waits on it
    finally:
        release.set()


# the caller's own connection: jobs stop themselves ----------------------------------------------
def _spin(job: float) -> str:
    """A job of `job` seconds that runs Python all along, as a training loop does."""
    end = time.monotonic() + job
    while time.monotonic() < end:
        time.sleep(0.01)
    return "done"


@pytest.fixture
def asked(monkeypatch) -> dict[str, bool]:
    """Ray's key-value store, as the jobs see it."""
    store: dict[str, bool] = {}
    monkeypatch.setattr(ray_jobs, "_stop_asked", lambda key: store.get(key, False))
    monkeypatch.setattr(ray_jobs, "STOP_POLL_S", 0.05)
    return store


def test_a_job_asked_to_stop_before_it_starts_does_not_start(asked) -> None:
    asked["stop-1"] = True
    started: list[float] = []
    with pytest.raises(KeyboardInterrupt):  # Ray reports it as TaskCancelledError, the worker kept
        ray_jobs._call(started.append, 1.0, "", "stop-1")
    assert started == []


@pytest.mark.parametrize(("job", "killed"), [(_spin, []), (time.sleep, [True])])
def test_a_running_job_asked_to_stop_stops_at_its_next_step(asked, monkeypatch, job, killed) -> None:
    """A job running Python stops at once; one long sleep ends first (Ray's workers gave a SIGINT
    no heed): its worker is killed after STOP_GRACE_S (here 0.3 s; this test's process is not)."""
    kills: list[bool] = []
    monkeypatch.setattr(ray_jobs, "_kill_worker", lambda: kills.append(True))
    monkeypatch.setattr(ray_jobs, "STOP_GRACE_S", 0.3)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in Ray's workers (xdist's ignore it)
    try:
        threading.Timer(0.2, asked.__setitem__, ("stop-1", True)).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            ray_jobs._call(job, 30.0 if job is _spin else 1.5, "", "stop-1")
        assert time.monotonic() - start < 10 and kills == killed
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_job_that_ends_first_is_not_interrupted_after(asked) -> None:
    """The watcher stops with the job: an interrupt landing after it would hit Ray's worker loop."""
    assert ray_jobs._call(_spin, 0.1, "", "stop-1") == "done"
    asked["stop-1"] = True
    time.sleep(0.3)  # a KeyboardInterrupt would surface here
    assert ray_jobs._call(_spin, 0.01) == "done"  # without a key: no watcher, nothing asked


# a real `ray start` cluster whose head is killed or hung -----------------------------------------
#: LEAVING_DRIVER's run, stopped once the head is gone (the parent kills or stops it, then says so).
HEADLESS_DRIVER = LEAVING_DRIVER[:LEAVING_DRIVER.index("outcomes.close()")] + """
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
outcomes.close()
print(json.dumps({"connected": ray.is_initialized(), "seconds": time.monotonic() - start}), flush=True)
os._exit(0)  # not Ray's exit: with a hung head it hangs, or crashes once the exit shutdown is dropped
"""


@pytest.fixture
def head() -> Iterator[dict]:
    """A `ray start --head` cluster with token authentication (`token_head`), of this test alone."""
    with token_head() as found:
        try:
            yield found
        finally:
            kill_session(found["root"] / "driver")


@pytest.mark.parametrize("lose", ["killed", pytest.param("hung", marks=pytest.mark.slow)])  # hung: 15 s more
def test_a_run_stopped_after_its_head_is_lost_leaves_within_the_bound(head, lose) -> None:
    """Killed: the old code skipped the leave (still connected after the stop). Hung: its probe
    connected, and the leave (`ray.shutdown`) did not return in 150 s here."""
    driver = head["root"] / "driver"
    driver.mkdir()
    (driver / "driver.py").write_text(HEADLESS_DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver / "driver.py"), f"127.0.0.1:{head['port']}", str(driver)],
                            cwd=REPO, env=env_for(driver, HOME=str(head["home"]), RAY_AUTH_MODE="token"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        for part in session(head["tmp"]):
            part.kill() if lose == "killed" else part.suspend()
        time.sleep(1)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=ray_executor.LEAVE_WAIT_S + 60)
    finally:
        proc.kill()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["connected"] == (lose == "hung"), err[-2000:]  # a hung leave is given up, connected
    assert seen["seconds"] < ray_executor.LEAVE_WAIT_S + 5, seen  # 5.1 s and 10.0 s here
    assert ("could not leave the Ray cluster" in err) == (lose == "hung"), err[-2000:]


#: LEAVING_DRIVER on a connection the driver made itself (`ray.init` before memprox runs). The
#: worker outlives its stopped job here (idle, for the next): the job runs while Ray's title for
#: the worker process names it.
CALLERS_DRIVER = LEAVING_DRIVER.replace(
    "outcomes = RayExecutor(address=sys.argv[1], progress=False, fn=sleep)",
    "ray.init(address=sys.argv[1], log_to_driver=False)\noutcomes = RayExecutor(progress=False, fn=sleep)",
).replace("return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE",
          "return 'sleeper600' in ' '.join(psutil.Process(pid).cmdline())")


def test_a_run_stopped_on_the_callers_own_connection_stops_its_jobs_and_keeps_it(head) -> None:
    """The long job (one `time.sleep(600)`) stops itself when asked, and no `ray.cancel` is made."""
    driver = head["root"] / "driver"
    driver.mkdir()
    assert CALLERS_DRIVER.count("sleeper600") == 1 and "ray.init" in CALLERS_DRIVER
    assert run_driver(CALLERS_DRIVER, driver, head, timeout=180) == {"connected": True, "long job runs": False}
