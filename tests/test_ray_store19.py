"""Where a Ray job's checkpoints go: into the run store only where the job sees it, i.e. runs on this
machine. A connection the caller made (`ray.init` in their script, no --ray-address) counted as a
local Ray whatever it reached, so on a multi-node cluster the jobs on other machines wrote
checkpoints under the driver's store path on their own disks (never cleared, never counted, and
resumed from by a later run placed there). Ray itself is a stand-in here with the two nodes the
caller's cluster has."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors import ray_jobs  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402
from harness.jobs import DataSource, Job  # noqa: E402
from tests.test_ray_joined17 import HEAD, FakeRay, stand_in  # noqa: E402

HERE, THERE = "10.0.0.5", "10.0.0.7"


class Cluster(FakeRay):
    """A connection whose cluster lists `ips` as its nodes' addresses; the driver's node is the first."""

    def __init__(self, *ips: str) -> None:
        super().__init__()
        self.listed = [{"NodeID": f"{i:056x}", "NodeManagerAddress": ip, "Alive": True} for i, ip in enumerate(ips)]

    def nodes(self) -> list[dict]:
        return self.listed

    def get_runtime_context(self) -> object:
        context = super().get_runtime_context()
        context.get_node_id = lambda: self.listed[0]["NodeID"]  # type: ignore[attr-defined]
        return context


def callers(monkeypatch, *ips: str) -> RayExecutor:
    """An executor without --ray-address, started on a connection the caller made to `ips`."""
    fake = stand_in(monkeypatch, Cluster(*ips))
    fake.connect()  # the caller's own ray.init()
    executor = RayExecutor(progress=False)
    executor.start()
    assert fake.calls == []  # used as it is
    return executor


def test_the_callers_multi_node_cluster_does_not_share_the_store(monkeypatch) -> None:
    assert callers(monkeypatch, HERE, THERE).shares_store is False


@pytest.mark.parametrize("ips", [(HERE,), (HERE, HERE)])  # one node; two nodes (two raylets) on this machine
def test_the_callers_cluster_on_this_machine_shares_the_store(monkeypatch, ips: tuple[str, ...]) -> None:
    assert callers(monkeypatch, *ips).shares_store is True


def test_a_ray_client_connection_does_not_share_the_store(monkeypatch) -> None:
    """Through `ray://` the driver's node is the head's: one node with its IP is still elsewhere."""
    from ray.util.client import ray as client

    monkeypatch.setattr(client, "is_connected", lambda: True)
    assert callers(monkeypatch, HERE).shares_store is False


def test_a_cluster_that_cannot_list_its_nodes_does_not_share_the_store(monkeypatch) -> None:
    executor = callers(monkeypatch, HERE)

    def nodes() -> list[dict]:
        raise ConnectionError("the head does not answer")

    monkeypatch.setattr(ray_executor.ray, "nodes", nodes)
    assert executor.shares_store is False


def test_memprox_s_own_rays_keep_their_answer(monkeypatch) -> None:
    """A local Ray memprox starts shares the store (before it starts, too); a cluster it joins does not."""
    stand_in(monkeypatch, Cluster(HERE, THERE))
    local = RayExecutor(progress=False)
    assert local.shares_store is True  # no connection yet: a local Ray will start
    local.start()
    assert local.shares_store is True
    joined = RayExecutor(address=HEAD, progress=False)
    joined.start()
    assert joined.shares_store is False


def _job(root: str | None) -> Job:
    return Job(specs=("spec",), requests=(), engine="single", source=DataSource("digits"),  # type: ignore[arg-type]
               checkpoint_root=root)


@pytest.mark.parametrize(("driver", "root"), [
    ("another-host", None),  # a node that joined after planning (an autoscaler's): not the driver's disk
    (socket.gethostname(), "/store"),  # the driver's own machine
    ("", "/store"),  # driver unknown: as planned
])
def test_a_job_checkpoints_only_on_the_drivers_machine(driver: str, root: str | None) -> None:
    seen: list[Job] = []
    ray_jobs._call(seen.append, _job("/store"), driver)  # type: ignore[arg-type]
    assert seen[0].checkpoint_root == root


def test_a_real_cluster_is_here_until_a_node_of_another_address_joins() -> None:
    """Ray's own node list and node ids (what the stand-in assumes), on a token-auth `ray start`
    cluster: its one node is here; a second node with another IP address (127.0.0.2: another
    machine, as the driver sees it) is not."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_ray_safety import env_for, token_head

    with token_head() as head:
        env = env_for(head["tmp"], HOME=str(head["home"]), RAY_AUTH_MODE="token")
        probe = ("import ray; from harness.executors.ray_cluster import runs_here; "
                 f"ray.init(address='127.0.0.1:{head['port']}', log_to_driver=False); print(runs_here(ray))")

        def here() -> str:
            return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                  timeout=120, check=True).stdout.strip()

        assert here() == "True"
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", f"--address=127.0.0.1:{head['port']}",
                        "--node-ip-address=127.0.0.2", "--num-cpus=1", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        assert here() == "False"
