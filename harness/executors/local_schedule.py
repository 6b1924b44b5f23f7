"""One `run` of the local pool (`harness.executors.local`) as its jobs go through the workers: the queue of
those waiting, handing the next one to an idle worker, and what a worker's message or death means for
its job (a result, a retry, a failure).

Its own module because this is the bookkeeping of one run's jobs, while `LocalExecutor` keeps the pool's
workers (starting, removing and stopping them) and the loop; the tests hold classes to 150 lines. Removing
a worker stays the executor's (`gone`, `ready`): it counts the starts that failed across runs."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.errors import RunFailed
from harness.executors.base import MAX_RETRIES
from harness.executors.local_watch import _Worker
from harness.executors.worker import READY

if TYPE_CHECKING:
    from harness.jobs import Job, JobResult


class RunSchedule:
    """The jobs of one `run`: `queue` holds the indexes still to hand out (a job whose worker died goes back
    first, up to MAX_RETRIES times), `deaths` how often each one's worker died. `gone` removes a dead
    worker and says how it ended; `ready` marks a worker ready (the executor's, as both count starts)."""

    def __init__(self, jobs: list[Job], gone: Callable[[_Worker], str], ready: Callable[[_Worker], None]) -> None:
        self.jobs = jobs
        self.queue = deque(range(len(jobs)))
        self.deaths = [0] * len(jobs)
        self._gone = gone
        self._ready = ready

    def hand_out(self, worker: _Worker) -> None:
        """Send the next job to an idle worker. One killed (or frozen) since cannot take it: it is replaced
        and the job, never started, goes first to the next (the send raised out of `run`: a traceback)."""
        worker.job, worker.started = self.queue.popleft(), time.monotonic()
        try:
            worker.conn.send((worker.job, self.jobs[worker.job]))
        except OSError:
            self.queue.appendleft(worker.job)
            worker.job = None
            self._gone(worker)

    def receive(self, worker: _Worker) -> tuple[int, JobResult | BaseException | None]:
        """Read one message; (job index, outcome) when a job ended, outcome None otherwise."""
        index, jobs = worker.job, self.jobs
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            how = self._gone(worker)
            if index is None:
                return -1, None
            self.deaths[index] += 1
            if self.deaths[index] <= MAX_RETRIES:
                self.queue.appendleft(index)
                return index, None
            return index, RunFailed(f"job {jobs[index].label()}: its worker died {self.deaths[index]} times ({how}); "
                                    "the runs of this job are not stored")
        except Exception as e:  # a result the driver cannot unpickle: that job's failure, not the run's
            worker.job = None
            if index is None:
                return -1, None
            return index, RuntimeError(f"job {jobs[index].label()}: its result could not be read ({e})")
        if message == READY:
            self._ready(worker)
            return -1, None
        if index is None or not (isinstance(message, tuple) and len(message) == 3 and message[0] == index):
            return -1, None  # not the answer to its job (a copy of the worker forked by a job's code): dropped
        worker.job = None
        return index, message[2]
