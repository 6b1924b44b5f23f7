"""A worker whose driver is alive still reports a job's failure that looks like a closed socket (jobsattack28).

abcbfe9 made a worker exit 0 quietly when its send raised BrokenPipeError or ConnectionResetError (the driver
died mid-send). The send pickles the answer first, so a result whose own pickling raised one of them (a
`__reduce__` that reads a closed pipe) was taken for a dead driver too: the live driver saw the worker end
without an answer instead of "the job's result could not be sent back". Speaking the worker's protocol over a
socket pair, as tests/test_worker28_driver_gone.py does; the driver stays alive here."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PipeOnPickle:
    """A result whose pickling raises BrokenPipeError (the driver is fine)."""

    def __reduce__(self):
        raise BrokenPipeError(32, "the result's own pipe is closed")


def returns_unsendable(job: object) -> object:
    return PipeOnPickle()


def raises_broken_pipe(job: object) -> object:
    raise BrokenPipeError(32, "the job's own pipe")


def _answer(fn) -> tuple[object, int]:
    """The worker's answer to one job (EOFError's class when it sent none), and its exit code."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "harness.executors.worker", str(theirs.fileno()), str(os.getpid())],
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), cwd=ROOT)
    theirs.close()
    conn = Connection(ours.detach())
    try:
        conn.send(([os.path.dirname(__file__)], 1, pickle.dumps(fn), None))
        assert conn.recv() == "ready"
        conn.send((0, "job"))
        try:
            answer: object = conn.recv()
        except EOFError:
            answer = EOFError
        if answer is not EOFError:
            conn.send(None)  # the end of the jobs
        proc.wait(timeout=50)
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    return answer, proc.returncode


@pytest.mark.timeout(60)
def test_a_result_whose_pickling_raises_broken_pipe_is_reported_to_a_live_driver() -> None:
    answer, code = _answer(returns_unsendable)
    assert answer is not EOFError, "the worker ended without an answer: taken for a dead driver"
    job_id, ok, error = answer  # type: ignore[misc]
    assert (job_id, ok, type(error)) == (0, False, RuntimeError)
    assert str(error) == "the job's result could not be sent back: [Errno 32] the result's own pipe is closed"
    assert code == 0


@pytest.mark.timeout(60)
def test_a_broken_pipe_raised_by_the_job_is_its_failure() -> None:
    answer, code = _answer(raises_broken_pipe)
    job_id, ok, error = answer  # type: ignore[misc]
    assert (job_id, ok, type(error), str(error)) == (0, False, BrokenPipeError, "[Errno 32] the job's own pipe")
    assert code == 0
