"""Stopping a run on a Ray cluster memprox joined (`--ray-address`): Ctrl-C, SIGTERM or a failed
store write leave the cluster (Ray ends a driver's tasks when it disconnects) instead of calling
`ray.cancel(force=True)` on each job, which races Ray's handling of a job that has just finished
("Check failed: ... Tried to complete task that was not pending", ray-project/ray#54846) and can
abort the driver with exit 1 after its "interrupted" line. A Ray the caller connected to is the
caller's: its jobs are asked to stop themselves (test_ray_leave18), the connection kept. Ray
itself is a stand-in here; the real
cluster is tested in test_ray_safety (`test_ctrl_c_on_a_joined_cluster_...`)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402

HEAD = "10.0.0.5:6379"


class FakeRay:
    """What `_stop` and `_init` ask of Ray: a connection that can be left, jobs that can be cancelled."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.up = False
        self.job = 0  # a new one per connection, as Ray's job id per ray.init

    def connect(self) -> None:
        self.up, self.job = True, self.job + 1

    def get_runtime_context(self) -> object:
        assert self.up, "get_runtime_context() without a connection starts a local Ray"
        return type("Context", (), {"get_job_id": lambda _: f"{self.job:08x}"})()

    def is_initialized(self) -> bool:
        return self.up

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.up = False

    def cancel(self, ref: object, force: bool = False) -> None:
        self.calls.append(("cancel", ref, force))

    def ask_to_stop(self, key: str) -> None:
        self.calls.append(("ask to stop", key))

    def wait(self, refs: list, num_returns: int, timeout: float, fetch_local: bool) -> tuple[list, list]:
        return list(refs), []  # every job has ended

    def forget_stop(self, key: str) -> None:
        self.calls.append(("forget stop", key))


@pytest.fixture
def fake(monkeypatch) -> FakeRay:
    return stand_in(monkeypatch, FakeRay())


def stand_in(monkeypatch, fake: FakeRay) -> FakeRay:
    """`fake` in place of Ray and of memprox's steps around it (join, local start, head probe)."""

    def join(address: str | None, target: str) -> None:
        fake.calls.append(("join", target))
        fake.connect()

    monkeypatch.setattr(ray_executor, "ray", fake)
    monkeypatch.setattr(ray_executor, "ask_to_stop", fake.ask_to_stop, raising=False)  # raising: the old code lacks it
    monkeypatch.setattr(ray_executor, "forget_stop", fake.forget_stop, raising=False)
    monkeypatch.setattr(ray_executor, "_join", join)
    monkeypatch.setattr(ray_executor, "check_reachable", lambda target: tuple(target.split(":")))
    monkeypatch.setattr(ray_executor, "_gcs_address", lambda: f"local-head-{fake.job}" if fake.up else None)

    def start_local(cpus: int) -> None:
        fake.calls.append("start local")
        fake.connect()
        ray_executor._own_local = f"local-head-{fake.job}"

    monkeypatch.setattr(ray_executor, "_start_local", start_local)
    monkeypatch.setattr(ray_executor, "_stop_reaper", lambda: None)
    monkeypatch.setattr(ray_executor, "_head_answers", lambda head: True)
    monkeypatch.setattr(ray_executor, "_joined", None)
    monkeypatch.setattr(ray_executor, "_own_local", None)
    return fake


def test_a_joined_cluster_is_left_not_cancelled_and_joined_again_by_the_next_run(fake) -> None:
    executor = RayExecutor(address=HEAD, progress=False)
    executor.start()
    assert fake.calls == [("join", HEAD)] and ray_executor._joined == ("00000001", HEAD)
    executor._stop({"ref-a": None, "ref-b": None})  # type: ignore[dict-item]
    assert fake.calls == [("join", HEAD), "shutdown"]  # no ray.cancel: nothing to race
    assert ray_executor._joined is None and not fake.up
    executor.start()  # a notebook's next run_experiment on the same executor joins again
    assert fake.calls[-1] == ("join", HEAD) and ray_executor._joined == ("00000002", HEAD)


def test_a_ray_the_caller_connected_to_is_asked_to_stop_and_kept(fake) -> None:
    fake.connect()  # the caller's own ray.init(); memprox joined nothing
    executor = RayExecutor(progress=False)
    executor.head, executor._stop_key = ("10.0.0.5", 6379), "stop-1"
    executor._stop({"ref-a": None})  # type: ignore[dict-item]
    assert fake.calls == [("ask to stop", "stop-1"), ("forget stop", "stop-1")] and fake.up  # no ray.cancel


def test_a_connection_the_caller_made_again_to_the_same_cluster_is_the_callers(fake) -> None:
    """memprox joined, then the caller left and connected again (`ray.shutdown(); ray.init(HEAD)`):
    the same head, but the caller's connection, which a Ctrl-C must not end: its jobs stop themselves."""
    executor = RayExecutor(address=HEAD, progress=False)
    executor.start()
    fake.shutdown()
    fake.connect()
    executor._stop_key = "stop-1"
    executor._stop({"ref-a": None})  # type: ignore[dict-item]
    assert fake.calls[1:] == ["shutdown", ("ask to stop", "stop-1"), ("forget stop", "stop-1")] and fake.up


OTHER = "10.0.0.9:6379"


@pytest.mark.parametrize(("first", "then", "calls"), [
    (HEAD, None, ["shutdown", "start local"]),  # joined, then a local run: it ran on the cluster
    (None, HEAD, ["shutdown", ("join", HEAD)]),  # a local run, then a cluster run: it ran on the local Ray
    (HEAD, OTHER, ["shutdown", ("join", OTHER)]),  # another cluster: it ran on the first
    (HEAD, HEAD, []),  # the same cluster: the connection is reused
    (None, None, []),  # and the local Ray
])
def test_each_run_connects_to_the_ray_it_asks_for(fake, first: str | None, then: str | None, calls: list) -> None:
    """A notebook's runs in one process: memprox keeps its own connection up for the next run, and a
    run that asked for another Ray ran on that one instead, silently (the cluster's jobs could not
    see this machine's store, which a local run assumes)."""
    RayExecutor(address=first, progress=False).start()
    before = len(fake.calls)
    executor = RayExecutor(address=then, progress=False)
    executor.start()
    assert fake.calls[before:] == calls and fake.up
    if then:  # the head watched is the cluster's asked for
        assert executor.head == tuple(then.split(":"))


def test_a_ray_the_caller_connected_to_is_used_as_it_is(fake) -> None:
    fake.connect()  # the caller's own ray.init(), to whatever cluster
    RayExecutor(progress=False).start()
    RayExecutor(address=HEAD, progress=False).start()
    assert fake.calls == [] and fake.up
