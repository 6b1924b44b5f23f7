"""A worker process of the local pool: `python -m harness.executors.worker FD DRIVER_PID`.

It talks to the driver over the socket FD (a `multiprocessing.connection.Connection`): first
(sys.path, threads, pickled job function or None, data source to warm up or None), to which it
answers READY once torch is set up (and, with --job-timeout, once the warm-up is done: `warm_up`);
then (job id, job) messages, each answered (job id, ok, result or exception); None or EOF ends it.

It must never outlive the driver, however the driver ends (Ctrl-C, an exception, kill -9): on Linux
the kernel kills it when the driver dies (PR_SET_PDEATHSIG), and everywhere a thread watches its
stdin, a pipe only the driver holds, and exits at EOF. It runs in a session of its own, so a Ctrl-C
in the terminal reaches the driver only, which then stops its workers.

Standard library only at import: the driver sets the thread variables (OMP_NUM_THREADS, ...) in
this process's environment, and torch is imported after that, with the first job message.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any

READY = "ready"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: A send to a driver that is gone. Its kernel closes the socket before it delivers the worker's death signal
#: (PR_SET_PDEATHSIG), so a worker may answer into a closed socket: it exits quietly, as it would at EOF.
GONE = (BrokenPipeError, ConnectionResetError)


def main(argv: list[str]) -> None:
    fd, driver = int(argv[0]), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping is the driver's job
    die_with_driver(driver)
    conn = Connection(fd)
    path, threads, fn_blob, warm = conn.recv()
    sys.path[:0] = [p for p in path if p not in sys.path]  # the driver's modules (a test's job function)
    from harness.jobs import configure_threads, run_job

    configure_threads(threads)
    fn = pickle.loads(fn_blob) if fn_blob is not None else run_job
    if warm is not None:
        warm_up(warm)
    conn.send(READY)
    own = os.getpid()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        job_id, job = message
        ok, payload = attempt(fn, job)
        if os.getpid() != own:  # a copy forked by the job's code, back here: the answer and the next job are
            os._exit(0)          # the worker's (both copies answered and took jobs off one socket)
        # Pickled apart from the send: a BrokenPipeError from the result's own pickling is its failure. Plain
        # pickle, not conn.send's ForkingPickler: torch's reductions on it moved a tensor's storage into shared
        # memory behind a descriptor that the driver, another interpreter, cannot fetch (AuthenticationError
        # in its recv, whose pickle.loads reads either).
        try:
            answer = pickle.dumps((job_id, ok, payload))
        except BaseException as e:  # the result (or the exception) does not pickle; SystemExit in a __reduce__
            answer = pickle.dumps(
                (job_id, False, RuntimeError(f"the job's result could not be sent back: {describe(e)}")))
        try:
            conn.send_bytes(answer)  # what conn.send does after pickling
        except GONE:
            os._exit(0)  # the driver died while we sent: no one to tell (a second send printed a traceback)


def warm_up(source: Any) -> None:
    """With --job-timeout, whose clock starts when a ready worker gets a job: pay what a fresh worker's
    first job would before the worker says it is ready (torch's flop counter, the dataset's load and
    its library's imports: ~7 s for digits on a busy 2-core machine), so that the clock counts the job,
    not the worker's start. The driver loaded the same data before it planned. A failure here is the
    job's to report, where it happens again: ignored."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the job's load says nothing either (`harness.jobs.prepared_data`)
            from harness.jobs import load_source
            from harness.timing import warm_up_flop_counter

            warm_up_flop_counter()
            load_source(source)
    except Exception:
        pass


def attempt(fn: Any, job: Any) -> tuple[bool, Any]:
    """(True, result) or (False, the exception); an exception's traceback goes to stderr (the
    driver's), so a bug in a job shows where it happened."""
    try:
        return True, fn(job)
    except BaseException as e:  # SystemExit or KeyboardInterrupt from the job's code too (this process
        with suppress(Exception):  # ignores SIGINT): the job's failure, not a dead worker to retry
            traceback.print_exc()  # not if the job closed stderr: the failure is reported all the same
        return False, portable(e)


def portable(error: BaseException) -> Exception:
    """The exception itself if it survives pickling and can say what it is, else a RuntimeError naming
    it; a BaseException that is no Exception (SystemExit, ...) as a RuntimeError too, so it cannot end
    the driver. One whose str() raised reached the driver, and its failure line raised there."""
    text = describe(error)
    if not isinstance(error, Exception):
        return with_notes(RuntimeError(f"{type(error).__name__}: {text}" if text else type(error).__name__), error)
    try:
        str(error)
        pickle.loads(pickle.dumps(error))
        return error
    except BaseException:
        return with_notes(RuntimeError(f"{type(error).__name__}: {text}"), error)


def with_notes(converted: Exception, error: BaseException) -> Exception:
    """`converted` with `error`'s notes (the recorder that raised it: `harness.recorders.bank.name_recorder`),
    which an exception in another's place (one that cannot be pickled, one named by its Ray node) lost on its
    way to the driver."""
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list) and all(isinstance(n, str) for n in notes):
        converted.__notes__ = list(notes)  # type: ignore[attr-defined]
    return converted


def describe(error: BaseException) -> str:
    """str(error), or what stands in for it where that raises."""
    try:
        return str(error)
    except BaseException as e:
        return f"<its message could not be read: {type(e).__name__}>"


def die_with_driver(driver: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl: the stdin watch below still applies
            pass
    if os.getppid() != driver:  # the driver died before the line above took effect
        os._exit(1)
    threading.Thread(target=_exit_at_eof, name="driver-watch", daemon=True).start()


def _exit_at_eof() -> None:
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
