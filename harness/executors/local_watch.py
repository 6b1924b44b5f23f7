"""What the local pool's driver sees of its workers on each turn of its loop (`harness.executors.local`):
which have a message or have ended (`_readable`), which ran past --job-timeout (`_overdue`) or never got
ready (`_late`), and the results they sent before a Ctrl-C (`_sent`).

Its own module because these only look: starting, killing and replacing workers stay in `local`, whose
size the tests hold modules to. None of them waits on a worker (`Channel`)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

from harness.executors.base import Outcome
from harness.executors.channel import Channel

if TYPE_CHECKING:
    from harness.jobs import Job

#: Seconds between checks of the workers while waiting for results.
POLL_S = 1.0


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen
    conn: Channel  # never waits on a message half sent (a worker frozen mid-send held the driver for good)
    ready: bool = False
    job: int | None = None  # index (in the current `run`) of the job it trains
    started: float = 0.0  # time.monotonic() when its job was handed to it (--job-timeout), or it started


def _readable(pool: list[_Worker], limit: float | None) -> list[_Worker]:
    """The workers with a whole message, at the end of their stream, or dead, within POLL_S (or sooner,
    where a job's --job-timeout comes). What arrived of a message is kept for the next call."""
    ends = [] if limit is None else [w.started + limit for w in pool if w.job is not None]
    waiting = 0.0 if any(w.conn.ready() for w in pool) else min([POLL_S, *(end - time.monotonic() for end in ends)])
    arrived = wait([w.conn.sock for w in pool], timeout=max(0.0, waiting))
    return [w for w in pool if (w.conn.poll(0) if w.conn.sock in arrived else w.conn.ready()) or _exited(w.proc)]


def _exited(proc: subprocess.Popen) -> bool:
    """Whether a worker has ended, leaving it unreaped where the system allows (`os.waitid` with WNOWAIT):
    its id then still names its process group, which `_stop` kills with it."""
    if proc.returncode is not None or not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return proc.poll() is not None


def _overdue(pool: list[_Worker], limit: float | None) -> list[_Worker]:
    """Workers whose job has run past --job-timeout and has sent nothing back (a result that arrived at
    the limit is read as any other; a worker that died at it is retried as any other)."""
    now = time.monotonic()
    return [] if limit is None else [w for w in pool if w.job is not None and now - w.started >= limit
                                     and not w.conn.poll(0)]


def _late(pool: list[_Worker], after: float | None) -> list[_Worker]:
    """Workers not ready `after` s after their start (None: never late), with nothing arrived: stopped, or
    hung in their warm-up (a data loader's deadlock). Under --job-timeout they held the experiment for good:
    the job clock starts only when a ready worker gets a job, so with no other worker nothing was handed out
    or timed out. `after`: max(--job-timeout, `local.START_FLOOR_S`), None without a limit."""
    now = time.monotonic()
    return [] if after is None else [w for w in pool if not w.ready and now - w.started >= after
                                     and not w.conn.poll(0)]


def _sent(workers: list[_Worker], jobs: list[Job]) -> list[Outcome]:
    """The results `workers` have already sent, read without waiting for a job still training (a
    second Ctrl-C stops this too). A dead worker or an unreadable result is no finished run."""
    sent = []
    for worker in workers:
        try:
            message = worker.conn.recv() if worker.job is not None and worker.conn.poll(0) else None
        except Exception:
            continue
        index = worker.job
        if index is not None and isinstance(message, tuple) and len(message) == 3 and message[0] == index:
            sent.append((jobs[index], message[2]))
    return sent
