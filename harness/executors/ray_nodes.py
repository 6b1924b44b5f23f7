"""Ray nodes lost while a run's jobs are out (see `harness.executors.ray`).

Ray retries a job whose node died, but where no live node can hold the retry (the lost node was the
only one with that many CPUs, or with a GPU) the retry waits in Ray's queue for ever ("Pending
Demands" in `ray status`), and so did memprox: on a two-node `ray start` cluster here, a 2-CPU job
on the 2-CPU node, whose raylet was killed, still waited minutes later beside a 1-CPU head. The
watch below looks at the nodes every `NODES_EVERY_S` while the driver waits, and once a node it saw
alive is gone, each outstanding job no live node can hold is reported failed, naming the lost node;
a job that fits a live node is left to Ray's retry. Standard library only; the Ray module is passed in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import RunFailed
from harness.executors.base import MAX_RETRIES
from harness.executors.ray_leave import finished_within

if TYPE_CHECKING:
    from harness.jobs import Job

#: Seconds between looks at the cluster's nodes while jobs are out, and how long one look may take
#: (a head that stopped answering would hold it up; the head check of `ray` decides about that).
NODES_EVERY_S = 5.0
NODES_READ_S = 5.0


@dataclass(frozen=True)
class Node:
    name: str  # how messages name it: "192.0.2.2 (host vm, node f27e790d)"
    cpus: float
    gpus: float

    def holds(self, job: Job) -> bool:
        return self.cpus >= job.num_cpus and self.gpus >= job.num_gpus


def alive_nodes(ray: Any) -> dict[str, Node]:
    """The cluster's live nodes by id, from `ray.nodes()` (which lists dead ones too)."""
    found = {}
    for n in ray.nodes():
        if n.get("Alive"):
            resources = n.get("Resources", {})
            name = (f"{n.get('NodeManagerAddress', '?')} (host {n.get('NodeManagerHostname', '?')}, "
                    f"node {str(n.get('NodeID', '?'))[:8]})")
            found[n.get("NodeID")] = Node(name, float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0)))
    return found


class NodeWatch:
    """The nodes of one `run`: those seen alive, those lost since, and the jobs given up for it."""

    def __init__(self, ray: Any, every: float = NODES_EVERY_S) -> None:
        self.ray, self.every = ray, every
        self.known: dict[str, Node] = self._look() or {}
        self.lost: dict[str, Node] = {}
        self.given_up: dict[Any, Job] = {}  # ref -> job: still in Ray's queue, to stop with the run
        self._due: list[tuple[Any, RunFailed]] = []
        self._next = time.monotonic() + every

    def _look(self) -> dict[str, Node] | None:
        """The live nodes, or None when Ray cannot tell within NODES_READ_S."""
        seen: list[dict[str, Node]] = []
        try:
            done = finished_within(lambda: seen.append(alive_nodes(self.ray)), NODES_READ_S)
        except Exception:  # the head is gone or busy: the head check of the driver's loop decides
            return None
        return seen[0] if done and seen else None

    def stranded(self, pending: Mapping[Any, Job]) -> tuple[Any, RunFailed] | None:
        """An outstanding job (ref, its failure) that no live node can hold since a node was lost; None
        when there is none (or it is not time to look again). The job leaves `pending`'s count to the
        caller; it stays in `given_up`, as Ray still holds it in its queue."""
        if not self._due and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            self._find(pending)
        while self._due:
            ref, failure = self._due.pop(0)
            if ref in pending:
                return ref, failure
        return None

    def _find(self, pending: Mapping[Any, Job]) -> None:
        alive = self._look()
        if alive is None:
            return
        self.lost.update({node_id: node for node_id, node in self.known.items() if node_id not in alive})
        self.known.update(alive)
        for node_id in alive:  # a node that came back under the same id is not lost
            self.lost.pop(node_id, None)
        if not self.lost:
            return
        lost = "; ".join(node.name for node in self.lost.values())
        for ref, job in pending.items():
            if not any(node.holds(job) for node in alive.values()):
                self.given_up[ref] = job
                gpus = f" and {job.num_gpus:g} GPU(s)" if job.num_gpus else ""
                self._due.append((ref, RunFailed(
                    f"job {job.label()}: Ray lost node {lost} during this run, and no live node has the "
                    f"{job.num_cpus:g} CPU(s){gpus} it needs, so Ray would wait for ever; its runs are not stored: "
                    "rerun once the cluster has such a node (runs already stored are kept)")))


def died(job: Job, error: BaseException) -> RunFailed:
    """The failure of a job whose worker or node died once more than Ray retries: Ray's NodeDiedError
    names the node (its IP and id), which the line keeps; its class name alone named nothing."""
    where = re.search(r"Node IP: ([^,\s]+), node ID: (\w+)", str(error))
    how = (f"the Ray node it ran on was lost, the last time node {where[2][:8]} at {where[1]}" if where
           else type(error).__name__)
    return RunFailed(f"job {job.label()}: its worker died {MAX_RETRIES + 1} times ({how}); the runs of this job "
                     "are not stored")
