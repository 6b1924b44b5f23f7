"""Stop keys (issue 19): the key in Ray's key-value store that asks the jobs of a run on the
caller's own connection to stop (`ray_jobs.ask_to_stop`).

A job read the key through Ray with no timeout (a read of a stopped head had not returned after
20 s) and let any error through: a head that did not answer that read failed the job as it started,
and a failed read in the watcher ended the watcher, so a later stop was never seen and the job ran
to its end. The key also stayed in Ray's store after the run, and the stop returned
while a job that ignores the interrupt still ran (up to STOP_GRACE_S). The stop also let an error
of Ray's through in place of the Ctrl-C. Faults are injected in the GCS client Ray's
`internal_kv` uses; the driver's side runs on the stand-in Ray of test_ray_joined17, the whole path
on a real `ray start` cluster."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")

from ray.exceptions import RpcError  # noqa: E402
from ray.experimental import internal_kv  # noqa: E402
from test_ray_joined17 import FakeRay, stand_in  # noqa: E402
from test_ray_leave18 import _spin, head  # noqa: E402,F401  (head: a fixture, a real `ray start` cluster)
from test_ray_safety import SLEEPERS, run_driver  # noqa: E402

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors import ray_jobs  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402


class FlakyGcs:
    """Ray's GCS client as a job sees it, answering reads of the stop key from a script: an
    exception is raised (the head did not answer), anything else is the value read. The last
    answer repeats."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.timeouts: list[float | None] = []

    def internal_kv_get(self, key: bytes, namespace: bytes | None = None, timeout: float | None = None) -> object:
        self.timeouts.append(timeout)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _failed() -> RpcError:
    return RpcError("Deadline Exceeded")  # what Ray 2.60 raised for a stopped and for a killed head


@pytest.fixture
def gcs(monkeypatch) -> Iterator[None]:
    """Quick polls, and Ray's default SIGINT handling as in its workers (xdist's workers ignore it)."""
    monkeypatch.setattr(ray_jobs, "STOP_POLL_S", 0.05)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_job_whose_first_look_fails_runs(gcs, monkeypatch) -> None:
    """The read as the job starts raised: the job failed with Ray's RpcError, and was not retried."""
    client = FlakyGcs(_failed(), None)
    monkeypatch.setattr(internal_kv, "global_gcs_client", client)
    assert ray_jobs._call(_spin, 0.3, "", "stop-1") == "done"  # type: ignore[arg-type]
    assert len(client.timeouts) >= 2  # the watcher kept looking after the failed read


def test_a_stop_is_seen_once_the_head_answers_again(gcs, monkeypatch) -> None:
    """Failed reads in the watcher ended it for good: the stop asked after them went unseen, and the
    job (here 8 s) ran to its end."""
    client = FlakyGcs(None, *[_failed()] * 4, b"1")
    monkeypatch.setattr(internal_kv, "global_gcs_client", client)
    with pytest.raises(KeyboardInterrupt):  # unseen, the job would have returned "done"
        ray_jobs._call(_spin, 8.0, "", "stop-1")  # type: ignore[arg-type]
    assert len(client.timeouts) == 6  # the look as it started, four failed ones, the stop


def test_each_look_gives_the_head_a_deadline(gcs, monkeypatch) -> None:
    """Without one, a read of a stopped head had not returned after 20 s (Ray 2.60)."""
    client = FlakyGcs(None)
    monkeypatch.setattr(internal_kv, "global_gcs_client", client)
    ray_jobs._call(_spin, 0.2, "", "stop-1")  # type: ignore[arg-type]
    assert client.timeouts and set(client.timeouts) == {ray_jobs.STOP_READ_S}


def test_every_run_gets_a_stop_key_of_its_own() -> None:
    """A key a crashed driver left behind must not stop a later run: no two runs share a key."""
    keys = {ray_jobs.new_stop_key() for _ in range(1000)}
    assert len(keys) == 1000 and all(key.startswith("stop-") and len(key) == 21 for key in keys)


# the driver's side, on a stand-in Ray ----------------------------------------------------------
class WaitingRay(FakeRay):
    """A Ray whose jobs have ended (`ended`) or not when the stop waits for them."""

    exceptions = ray.exceptions

    def __init__(self, ended: bool) -> None:
        super().__init__()
        self.ended = ended

    def wait(self, refs: list, num_returns: int, timeout: float, fetch_local: bool) -> tuple[list, list]:
        self.calls.append(("wait", tuple(refs), num_returns, fetch_local))
        return (list(refs), []) if self.ended else ([], list(refs))


def _stopped_on_callers_connection(monkeypatch, fake: WaitingRay) -> RayExecutor:
    stand_in(monkeypatch, fake)
    fake.connect()  # the caller's own ray.init
    executor = RayExecutor(progress=False)
    executor._stop_key = "stop-1"
    executor._stop({"ref-a": None, "ref-b": None})  # type: ignore[dict-item]
    return executor


def test_the_key_is_deleted_once_every_job_of_the_run_has_ended(monkeypatch) -> None:
    fake = WaitingRay(ended=True)
    _stopped_on_callers_connection(monkeypatch, fake)
    assert fake.calls == [("ask to stop", "stop-1"), ("wait", ("ref-a", "ref-b"), 2, False), ("forget stop", "stop-1")]
    assert fake.up  # the caller's connection is kept


def test_the_key_stays_while_a_job_of_the_run_has_not_ended(monkeypatch) -> None:
    """A job still queued, or Ray's retry of one whose worker was killed, would start without it."""
    fake = WaitingRay(ended=False)
    _stopped_on_callers_connection(monkeypatch, fake)
    assert fake.calls == [("ask to stop", "stop-1"), ("wait", ("ref-a", "ref-b"), 2, False)]


def test_a_head_that_refuses_the_request_is_a_warning_not_a_traceback(monkeypatch, capsys) -> None:
    """Ray's error from the request came out of the stop, in place of the Ctrl-C that asked for it."""
    fake = WaitingRay(ended=True)

    def refused(key: str) -> None:
        fake.calls.append(("ask to stop", key))
        raise _failed()

    monkeypatch.setattr(fake, "ask_to_stop", refused)
    _stopped_on_callers_connection(monkeypatch, fake)
    assert fake.calls == [("ask to stop", "stop-1")]  # nothing asked, so nothing to delete
    assert "could not ask this run's Ray jobs to stop" in capsys.readouterr().err


def test_a_wait_that_hangs_leaves_the_key_within_the_bound(monkeypatch) -> None:
    fake = WaitingRay(ended=True)
    release = threading.Event()
    monkeypatch.setattr(fake, "wait", lambda *args, **kwargs: release.wait(30))
    monkeypatch.setattr(ray_executor, "ENDED_WAIT_S", 0.2, raising=False)
    stopping = threading.Thread(target=_stopped_on_callers_connection, args=(monkeypatch, fake), daemon=True)
    try:
        stopping.start()
        stopping.join(10)
        assert not stopping.is_alive(), "the stop waited on the hung wait"
    finally:
        release.set()
    assert fake.calls == [("ask to stop", "stop-1")]


# a real `ray start` cluster ------------------------------------------------------------------------
#: A driver on its own connection: a run with a long job (one `time.sleep(600)`: it ignores the
#: interrupt, so its worker is killed and Ray's retry stops as it starts) is stopped beside a key
#: of another driver; then its key is put back, as a driver killed mid-stop leaves it, and a next run
#: must not be stopped by it.
KEYS_DRIVER = """
import json, os, sys, time
from dataclasses import dataclass
from pathlib import Path

import psutil
import ray
from ray.experimental.internal_kv import _internal_kv_list, _internal_kv_put

from harness.executors.ray import RayExecutor
""" + SLEEPERS + """

def running(pid):
    try:
        return "sleeper600" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def keys():
    return sorted(key.decode() for key in _internal_kv_list("", namespace="memprox"))


ray.init(address=sys.argv[1], log_to_driver=False)
_internal_kv_put("stop-of-another-driver", b"1", namespace="memprox")
first = RayExecutor(progress=False, fn=sleep)
outcomes = first.run([Sleeper(0.1), Sleeper(600)])
next(outcomes)
while not (out / "600.pid").exists():
    time.sleep(0.2)
outcomes.close()
seen = {"long job runs": running(int((out / "600.pid").read_text())), "keys after the stop": keys()}
_internal_kv_put(first._stop_key, b"1", namespace="memprox")
later = RayExecutor(progress=False, fn=sleep).run([Sleeper(0.2), Sleeper(0.3)])
seen["next run"] = sorted(outcome for _, outcome in later)
print(json.dumps(seen), flush=True)
"""


@pytest.mark.slow  # 12 s: a real cluster; the key handling is checked on a stand-in above
def test_a_stopped_run_on_a_real_cluster_ends_its_jobs_then_deletes_only_its_own_key(head) -> None:  # noqa: F811
    """Before, the stop returned with the long job still asleep (it was killed STOP_GRACE_S later),
    and its key stayed in Ray's store for good."""
    driver = head["root"] / "driver"
    driver.mkdir()
    assert run_driver(KEYS_DRIVER, driver, head, timeout=240) == {
        "long job runs": False, "keys after the stop": ["stop-of-another-driver"], "next run": [0.2, 0.3]}
