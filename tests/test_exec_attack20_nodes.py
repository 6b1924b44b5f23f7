"""A Ray node lost while it runs a job (issue 20): Ray retries the job, but where no live node can
hold the retry it waited in Ray's queue for ever, and so did memprox. Now such a job is reported
failed naming the lost node (`harness.executors.ray_nodes`); a job that still fits a live node is
left to Ray's retry; the results that had arrived are kept.

The unit tests feed `NodeWatch` the node tables a fake Ray lists; the slow one kills the raylet of
the second node of a real two-node token cluster (a `ray start --head` and a `ray start --address`
on this machine) under a job only that node could hold.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _processes import wait_until

from harness.errors import RunFailed
from harness.executors.ray_nodes import NodeWatch, died


@dataclass
class Job:
    name: str
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def label(self) -> str:
        return self.name


class FakeRay:
    """`ray.nodes()` as Ray lists them: dead nodes stay in the table with Alive False."""

    def __init__(self, *nodes: tuple) -> None:
        self.table = [self.node(*n) for n in nodes]

    @staticmethod
    def node(node_id: str, cpus: float, gpus: float = 0.0) -> dict:
        resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
        return {"NodeID": node_id, "Alive": True, "NodeManagerAddress": "10.0.0.9", "NodeManagerHostname": "gpu-3",
                "Resources": resources}

    def kill(self, node_id: str) -> None:
        for n in self.table:
            if n["NodeID"] == node_id:
                n.update(Alive=False, Resources={})

    def nodes(self) -> list[dict]:
        return [dict(n) for n in self.table]


def drain(watch: NodeWatch, pending: dict) -> dict[str, RunFailed]:
    """Every job `watch` gives up on, as the driver's loop takes them (one at a time, out of `pending`)."""
    failed = {}
    while (stranded := watch.stranded(pending)) is not None:
        ref, failure = stranded
        failed[ref] = failure
        del pending[ref]
    return failed


def test_a_job_no_live_node_can_hold_after_a_node_is_lost_fails_naming_it() -> None:
    ray = FakeRay(("head0000aaaa", 1.0), ("big00000bbbb", 2.0))
    watch = NodeWatch(ray, every=0.0)
    pending = {"r1": Job("big", num_cpus=2.0), "r2": Job("small", num_cpus=1.0)}
    assert drain(watch, dict(pending)) == {}  # nothing lost: nothing given up
    ray.kill("big00000bbbb")
    left = dict(pending)
    failed = drain(watch, left)
    assert list(failed) == ["r1"] and list(left) == ["r2"]  # the 1-CPU job is left to Ray's retry on the head
    text = str(failed["r1"])
    assert "job big: Ray lost node 10.0.0.9 (host gpu-3, node big00000)" in text
    assert "no live node has the 2 CPU(s) it needs" in text and "runs already stored are kept" in text
    assert watch.given_up == {"r1": pending["r1"]}  # still in Ray's queue: the run stops it at its end


def test_a_gpu_job_fails_when_the_only_gpu_node_is_lost() -> None:
    ray = FakeRay(("cpu0", 8.0), ("gpu0", 8.0, 1.0))
    watch = NodeWatch(ray, every=0.0)
    ray.kill("gpu0")
    failed = drain(watch, {"r": Job("g", num_cpus=1.0, num_gpus=0.5)})
    assert "the 1 CPU(s) and 0.5 GPU(s) it needs" in str(failed["r"])


def test_a_node_lost_while_another_holds_the_job_gives_nothing_up() -> None:
    ray = FakeRay(("a", 2.0), ("b", 2.0))
    watch = NodeWatch(ray, every=0.0)
    ray.kill("b")
    assert drain(watch, {"r": Job("j", num_cpus=2.0)}) == {} and watch.given_up == {}


def test_a_node_that_joins_after_the_loss_takes_the_retry() -> None:
    ray = FakeRay(("head", 1.0), ("big", 2.0))
    watch = NodeWatch(ray, every=0.0)
    ray.kill("big")
    ray.table.append(FakeRay.node("new", 2.0))  # an autoscaler's, or the node restarted: a new id
    assert drain(watch, {"r": Job("j", num_cpus=2.0)}) == {}


def test_a_cluster_that_cannot_list_its_nodes_gives_nothing_up() -> None:
    class Broken(FakeRay):
        def nodes(self) -> list[dict]:
            raise ConnectionError("the head is gone")

    watch = NodeWatch(Broken(("a", 1.0)), every=0.0)
    assert drain(watch, {"r": Job("j", num_cpus=4.0)}) == {}  # the head check decides about a gone head


def test_a_job_that_lost_its_node_twice_names_the_node() -> None:
    error = Exception("Task failed because the node it was running on is dead or unavailable. Node IP: "
                      "192.0.2.2, node ID: af5618b87f88b9a5c21a551b118333fe922881d1bb0e0f53c3d865df. This can happen")
    text = str(died(Job("digits-s0"), error))  # type: ignore[arg-type]
    assert text == ("job digits-s0: its worker died 2 times (the Ray node it ran on was lost, the last time node "
                    "af5618b8 at 192.0.2.2); the runs of this job are not stored")
    crashed = type("WorkerCrashedError", (Exception,), {})()
    assert "(WorkerCrashedError)" in str(died(Job("j"), crashed))  # type: ignore[arg-type]


# a real two-node cluster --------------------------------------------------------------------------
@contextlib.contextmanager
def two_nodes() -> Iterator[dict[str, Any]]:
    """A token-authenticated head of 1 CPU and a second node of 2 CPUs, each `ray start`ed with its
    own temp dir (the second's `node_tmp` marks its processes); all removed afterwards."""
    from tests.test_ray_safety import env_for, free_port, kill_session

    root = Path(tempfile.mkdtemp(prefix="mpx", dir="/tmp"))
    cluster: dict[str, Any] = {"root": root, "home": root / "home", "port": free_port(), "tmp": root / "h",
                               "node_tmp": root / "n"}
    (cluster["home"] / ".ray").mkdir(parents=True)
    for folder in (cluster["tmp"], cluster["node_tmp"]):
        folder.mkdir()
    token = cluster["home"] / ".ray" / "auth_token"
    token.write_text("0" * 64)
    token.chmod(0o600)
    ray_cli = str(Path(sys.executable).parent / "ray")
    try:
        for tmp, args in ((cluster["tmp"], ["--head", f"--port={cluster['port']}", "--num-cpus=1",
                                            "--include-dashboard=false"]),
                          (cluster["node_tmp"], [f"--address=127.0.0.1:{cluster['port']}", "--num-cpus=2"])):
            subprocess.run([ray_cli, "start", *args, f"--temp-dir={tmp}", "--disable-usage-stats"],
                           env=env_for(tmp, HOME=str(cluster["home"]), RAY_AUTH_MODE="token"),
                           check=True, capture_output=True, timeout=120)
        yield cluster
    finally:
        for tmp in (cluster["node_tmp"], cluster["tmp"]):
            kill_session(tmp)
        shutil.rmtree(root, ignore_errors=True)


#: A driver that runs a 0.1 s job and a 2-CPU job (only the second node has 2 CPUs), prints each
#: outcome as it arrives and, at the end, whether it is still connected (the given-up job is stopped).
LOST_NODE_DRIVER = """
import json, os, sys, time
from dataclasses import dataclass
from pathlib import Path

import ray
from harness.executors.ray import RayExecutor
""" + """
out = Path(sys.argv[2])


@dataclass
class Sleeper:
    seconds: float
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def label(self) -> str:
        return f"sleeper{self.seconds:g}"


def sleep(job):
    (out / f"{job.seconds:g}.pid").write_text(str(os.getpid()))
    time.sleep(job.seconds)
    return job.seconds


for job, outcome in RayExecutor(address=sys.argv[1], progress=False, fn=sleep).run([Sleeper(0.1), Sleeper(600, 2.0)]):
    print(json.dumps({"job": job.label(), "outcome": repr(outcome)}), flush=True)
print(json.dumps({"connected": ray.is_initialized()}), flush=True)
"""


@pytest.mark.slow
def test_a_job_whose_node_is_lost_with_no_other_node_for_it_is_reported_not_waited_for() -> None:
    """The 2-CPU job trains on the second node; its raylet and workers are killed (kill -9). Ray
    retries the job, which no live node can hold (the head has 1 CPU): the old code waited for ever
    (still waiting minutes later, `ray status` showing the pending demand); the driver now reports
    it failed naming the lost node, keeps the finished job's result, and leaves the cluster."""
    from tests.test_ray_safety import env_for, kill_session

    with two_nodes() as cluster:
        work = cluster["root"] / "w"
        work.mkdir()
        (work / "driver.py").write_text(LOST_NODE_DRIVER)
        repo = str(Path(__file__).resolve().parent.parent)  # this checkout's memprox, not the one installed
        proc = subprocess.Popen([sys.executable, str(work / "driver.py"), f"127.0.0.1:{cluster['port']}", str(work)],
                                cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env_for(work, HOME=str(cluster["home"]), RAY_AUTH_MODE="token", PYTHONPATH=repo))
        try:
            assert wait_until(lambda: (work / "600.pid").exists(), 120, proc)
            pid = int((work / "600.pid").read_text())
            assert f"RAY_TMPDIR={cluster['node_tmp']}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
            kill_session(cluster["node_tmp"])  # the second node dies: raylet, its workers
            out, err = proc.communicate(timeout=120)  # the old code: TimeoutExpired
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    outcomes = {r["job"]: r["outcome"] for r in reports if "job" in r}
    assert outcomes["sleeper0.1"] == "0.1"
    assert outcomes["sleeper600"].startswith("RunFailed('job sleeper600: Ray lost node ")
    assert "no live node has the 2 CPU(s) it needs" in outcomes["sleeper600"]
    assert reports[-1] == {"connected": False}  # left: Ray ends the queued retry with the connection
