"""A local worker that never gets ready, under --job-timeout (kill fuzzing, fuzz22).

The --job-timeout clock starts when a ready worker gets its job, so a worker stopped (SIGSTOP) or
hung (a data loader that deadlocks in its warm-up) before it said it was ready held the experiment
for good: with --workers 1 nothing was ever handed out, so nothing ever timed out. Found by
stopping a starting worker of `run --workers 1 --job-timeout 10`: 45 s later it still waited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

import harness.executors.local as local
from harness.executors.base import WorkersLost
from harness.executors.channel import Channel


def _silent_worker(threads: int, spawned: list[subprocess.Popen], ends: list[socket.socket]) -> local._Worker:
    """A 'worker' that lives but never answers: a sleeping process, and a socket whose other end stays open."""
    ours, theirs = socket.socketpair()
    ends.append(theirs)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE,
                            start_new_session=True)
    spawned.append(proc)
    return local._Worker(proc, Channel(ours))


def test_a_worker_never_ready_under_a_job_timeout_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[subprocess.Popen] = []
    ends: list[socket.socket] = []
    monkeypatch.setattr(local, "_spawn", lambda threads: _silent_worker(threads, spawned, ends))
    monkeypatch.setattr(local, "START_FLOOR_S", 0.0, raising=False)
    executor = local.LocalExecutor(workers=1, progress=False, job_timeout=0.5)
    caught: list[BaseException] = []

    def consume() -> None:
        try:
            list(executor.run([SimpleNamespace(source=None, num_gpus=0.0)]))  # type: ignore[list-item]
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(30)
    try:
        assert not thread.is_alive(), "the pool still waits for a worker that never gets ready"
        assert len(caught) == 1 and isinstance(caught[0], WorkersLost), caught
        message = str(caught[0])
        assert "not ready within 0.5 s" in message and "rerun" in message, message
        assert len(spawned) == local.START_FAILURES  # each given up on, then no more started
        assert all(p.poll() is not None for p in spawned)  # and killed
    finally:
        executor.close()
        for proc in spawned:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for end in ends:
            end.close()
