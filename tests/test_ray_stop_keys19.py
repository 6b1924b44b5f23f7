"""Stop keys (issue 19): the key in Ray's key-value store that asks the jobs of a run on the
caller's own connection to stop (`ray_jobs.ask_to_stop`).

A job read the key through Ray with no timeout and let any error through: a head that did not
answer that read failed the job as it started (or, with no timeout, held it until Ray's own timeout
ran out), and a failed read in the watcher ended the watcher, so a later stop was never seen and
the job ran to its end. Faults are injected in the GCS client Ray's `internal_kv` uses."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")

from ray.exceptions import RpcError  # noqa: E402
from ray.experimental import internal_kv  # noqa: E402
from test_ray_leave18 import _spin  # noqa: E402

from harness.executors import ray_jobs  # noqa: E402


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
