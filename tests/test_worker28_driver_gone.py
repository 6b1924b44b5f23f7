"""A worker whose driver dies while it sends a result exits quietly.

The driver's kernel closes its socket before the worker's death signal (PR_SET_PDEATHSIG) arrives, so a
worker could answer into a closed socket: its `BrokenPipeError` fell into the "result could not be sent
back" branch, whose second send failed too, and a two-exception traceback went to the user's terminal
(seen once in 13 kill -9s of a driver beside a second experiment). Here the driver's end is closed by
hand while the job runs; the worker's stdin (the driver's other watch) stays open, so only the send
can tell it the driver is gone.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def slow_answer(job: object) -> str:
    """A job that is still running when the driver goes away."""
    time.sleep(1.5)
    return "x" * 1000


@pytest.mark.timeout(60)
def test_a_worker_answering_a_driver_that_is_gone_exits_0_without_a_traceback() -> None:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "harness.executors.worker", str(theirs.fileno()), str(os.getpid())],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),), cwd=ROOT)
    theirs.close()
    conn = Connection(ours.detach())
    try:
        conn.send(([os.path.dirname(__file__)], 1, pickle.dumps(slow_answer), None))
        assert conn.recv() == "ready"
        conn.send((0, "job"))
        conn.close()  # the driver is gone while the job runs; stdin stays open
        proc.wait(timeout=50)  # not communicate(): it closes stdin, and the worker exits at its EOF
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    assert b"Traceback" not in err, err.decode(errors="replace")
    assert proc.returncode == 0
