"""The driver's wait for a run's Ray jobs (see `harness.executors.ray`): each result as it arrives,
while making sure the wait can end.

Ray alone would wait for ever on a job no live node can hold any more, and would end this process
after 60 s without its head; so the wait goes in short steps, checks the head every `POLL_S` (one
gone for `LOST_AFTER_S` ends the run with one line: `ClusterLost`, exit 1, stored runs kept), hands a
job stranded by a lost node to `NodeWatch` and one past --job-timeout to `JobClocks`. The Ray module
and the head check are passed in: the executor's own (tests stand in for both there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from harness.errors import RunFailed
from harness.executors.base import Outcome, WorkersLost, progress_bar
from harness.executors.ray_jobs import _job_error, said
from harness.executors.ray_nodes import NodeWatch, died
from harness.executors.ray_timeout import JobClocks

if TYPE_CHECKING:
    from harness.jobs import Job, JobResult

#: Seconds between checks of the head while jobs run, and how long it may be unreachable.
POLL_S = 1.0
LOST_AFTER_S = 5.0

#: Whether the cluster's head (host, port; None: none to watch) answers now.
HeadCheck = Callable[[tuple[str, int] | None], bool]


class ClusterLost(WorkersLost):
    """The Ray cluster stopped answering mid-run: one line, exit 1, stored runs kept, a rerun resumes."""


def head_gone(head: tuple[str, int] | None, answers: HeadCheck) -> bool:
    """Whether the head stays unreachable for LOST_AFTER_S (one failed connect proves little)."""
    deadline = time.monotonic() + LOST_AFTER_S
    while time.monotonic() < deadline:
        if answers(head):
            return False
        time.sleep(POLL_S)
    return True


def next_done(ray: Any, pending: dict[Any, Job], head: tuple[str, int] | None, lost: Callable[[], ClusterLost],
              nodes: NodeWatch, clocks: JobClocks | None, answers: HeadCheck) -> tuple[Any, RunFailed | None]:
    """The next finished job's ref, or one that can no longer run (its failure: `NodeWatch`) or ran past
    --job-timeout (`JobClocks`). Waits in short steps, checking that the head still answers (Ray would
    otherwise end this process after 60 s) and that no lost node has left a job waiting for ever."""
    seen = time.monotonic()
    while True:
        if clocks is not None:
            clocks.look()
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        if ready:
            return ready[0], None
        if answers(head):
            seen = time.monotonic()
            if stranded := nodes.stranded(pending) or (clocks.stop_overdue(pending) if clocks else None):
                return stranded
        elif time.monotonic() - seen > LOST_AFTER_S:
            raise lost()


def collect(ray: Any, pending: dict[Any, Job], head: tuple[str, int] | None, lost: Callable[[], ClusterLost],
            nodes: NodeWatch, clocks: JobClocks | None, answers: HeadCheck, progress: bool) -> Iterator[Outcome]:
    """Each job's outcome as it ends: its result, the exception it raised (not retried), or its failure
    (its worker died twice, its node was lost, it ran too long). A job leaves `pending` only once its
    outcome is in hand: a Ctrl-C during the fetch finds it there (`finished_results`)."""
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(j.num_cpus for j in pending.values())))
    with progress_bar(len(pending), progress) as bar:
        while pending:
            bar.set_postfix(running=min(slots, len(pending)))
            ref, stranded = next_done(ray, pending, head, lost, nodes, clocks, answers)
            job = pending[ref]
            try:
                outcome: JobResult | BaseException = stranded or said(ray.get(ref))
            except ray.exceptions.RayTaskError as e:  # the job raised: report it, do not retry
                outcome = _job_error(e)
            except ray.exceptions.RayError as e:  # the worker or its node died, twice
                if head_gone(head, answers):  # not one job's fault: the whole cluster is gone
                    raise lost() from None
                outcome = died(job, e)
            bar.update()
            del pending[ref]
            yield job, outcome
