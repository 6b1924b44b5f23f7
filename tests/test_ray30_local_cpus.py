"""The CPUs of the local Ray memprox starts (`--executor ray` without `--ray-address`): enough for at least
one run of `--threads` threads. It was started with the CPUs this process may use, so on a 2-CPU machine
`--executor ray --threads 4` was refused after Ray had started ("each run asks for 4 CPU(s) (--threads), but
the largest live node of the Ray cluster has 2 ... add a node with more CPUs", exit 2), right below the
executor's own warning that it would run 1 worker x 4 threads, which `--executor local` does. Ray is a
stand-in here (`test_ray_joined17.stand_in`)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402
from tests.test_ray_joined17 import FakeRay, stand_in  # noqa: E402


@pytest.mark.parametrize(("usable", "threads", "workers", "cpus"), [
    (2, 4, None, 4),  # more threads than CPUs: one run at a time, as the local pool (was 2: refused)
    (2, 1, None, 2),  # the default: every usable CPU
    (3, 2, None, 2),  # one 2-thread run fits; the third CPU would hold none
    (8, 3, None, 6),
    (2, 4, 3, 12),  # --workers says how many at once
    (2, 1, 5, 5),
])
def test_the_local_ray_holds_at_least_one_run(monkeypatch, usable, threads, workers, cpus) -> None:
    fake = stand_in(monkeypatch, FakeRay())
    started: list[int] = []

    def start_local(n: int) -> None:
        started.append(n)
        fake.connect()
        ray_executor._own_local = f"local-head-{fake.job}"

    monkeypatch.setattr(ray_executor, "_start_local", start_local)
    monkeypatch.setattr(ray_executor, "usable_cpus", lambda: usable)
    RayExecutor(workers=workers, threads=threads, progress=False).start()
    assert started == [cpus]
