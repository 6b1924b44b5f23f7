"""The Ray executor's `close` (the runner's call once training is over, before evaluation) stops the
local Ray memprox started, as the local executor stops its pool. Before, it was the base class's
no-op: the local Ray's idle workers and object store stayed up through evaluation (after a 2-worker
run here: 11 processes, 1.7 GiB resident counting shared pages in each): the near-duplicate search
ran beside them, and its memory check right before the search (`harness.search_memory`) counted
their memory as taken, so it could refuse a search that fit without them, telling the user to free
memory memprox itself held."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402


def test_close_stops_the_local_ray_memprox_started_and_no_other(monkeypatch) -> None:
    stopped: list[str] = []
    monkeypatch.setattr(ray_executor, "_stop_local", lambda: stopped.append("local"))
    monkeypatch.setattr(ray_executor, "ray", SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setattr(ray_executor, "_own_local", "127.0.0.1:6379")
    monkeypatch.setattr(ray_executor, "_gcs_address", lambda: "127.0.0.1:6379")
    executor = RayExecutor(workers=1, progress=False)
    executor.head = ("127.0.0.1", 6379)
    executor.close()
    assert stopped == ["local"] and executor.head is None  # the next run starts another and watches it
    monkeypatch.setattr(ray_executor, "_gcs_address", lambda: "10.0.0.9:6379")  # the caller's own Ray
    executor.close()
    assert stopped == ["local"]


@pytest.mark.slow
def test_a_real_local_ray_is_gone_after_close() -> None:
    if ray.is_initialized():
        pytest.skip("needs a process without Ray: the executor starts its own")

    @dataclass
    class _Job:  # defined here: cloudpickle sends it by value (a Ray worker cannot import this module)
        num_cpus: float = 1.0
        num_gpus: float = 0.0

        def label(self) -> str:
            return "ab25 job"

    executor = RayExecutor(workers=1, progress=False, fn=lambda job: "trained")
    try:
        assert [outcome for _, outcome in executor.run([_Job()])] == ["trained"]  # type: ignore[list-item]
        assert ray.is_initialized() and executor.started_ray
        executor.close()
        assert not ray.is_initialized() and not executor.started_ray
    finally:
        executor.shutdown()
