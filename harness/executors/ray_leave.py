"""Leaving a Ray cluster within a bound (see `harness.executors.ray`): `ray.shutdown()` on a joined
cluster is how memprox ends its jobs there on Ctrl-C, and Ray gives it no deadline. Measured on a
`ray start --head` cluster here (Ray 2.60, a loaded 2-core machine): 0.3 s with the head up, 5 s
with the head's processes killed (GCS alone or the whole node), and no end in 150 s with the head
hung (its processes stopped: the TCP connect still succeeds). Standard library only; the Ray
module is passed in (a stand-in in tests)."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

#: Seconds a leave may take before the Ctrl-C goes on without it (twice the dead head's 5 s).
LEAVE_WAIT_S = 10.0
#: A shutdown given up on (`shutdown_within`) and the cluster it leaves, until it returns.
_given_up: tuple[threading.Thread, str] | None = None


def shutdown_within(ray: Any, seconds: float = LEAVE_WAIT_S, target: str = "the cluster") -> bool:
    """`ray.shutdown()`, waited for `seconds` at most; False when it had not returned by then (and
    Ray's own shutdown at exit, which would wait on it, is dropped; `hung_leave` says it runs on)."""
    global _given_up
    running = _within(ray.shutdown, seconds)
    if running is None:
        return True
    _given_up = (running, target)
    _skip_exit_shutdown(ray)
    return False


def hung_leave() -> str | None:
    """The cluster of a shutdown given up on that has not returned yet (waited for a second): the
    connection is half shut down, and Ray's next connect would wait on the shutdown's lock."""
    global _given_up
    if _given_up is not None:
        _given_up[0].join(1.0)
        if not _given_up[0].is_alive():
            _given_up = None
    return _given_up[1] if _given_up is not None else None


def finished_within(call: Callable[[], object], seconds: float) -> bool:
    """`call()`, waited for `seconds` at most; False when it had not returned by then. It runs in a
    daemon thread: a call to Ray that waits on its head cannot be interrupted, and a hung head
    must not hang the Ctrl-C that asked to stop. An exception from it is raised here, as a direct
    call would."""
    return _within(call, seconds) is None


def ended_within(ray: Any, refs: list, seconds: float) -> bool:
    """Whether every task of `refs` has ended within `seconds` (a task Ray retries, once its retry
    has). Waited for in a thread, as `finished_within`: Ray's wait may not keep its timeout on a
    head that stopped answering."""
    left: list[list] = []

    def wait() -> None:
        left.append(ray.wait(refs, num_returns=len(refs), timeout=seconds, fetch_local=False)[1])

    return finished_within(wait, seconds + 1.0) and left == [[]]


def _within(call: Callable[[], object], seconds: float) -> threading.Thread | None:
    """`finished_within`: None when `call` returned, else its thread, still running."""
    done = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            failed.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="memprox-ray-stop", daemon=True)
    thread.start()
    if not done.wait(seconds):
        return thread
    if failed:
        raise failed[0]
    return None


def _skip_exit_shutdown(ray: Any) -> None:
    """Drop the `ray.shutdown` Ray registered to run at interpreter exit: the hung one holds Ray's
    connect-or-shutdown lock, so the exit's call would wait on it for ever and the process (a
    Ctrl-C'd CLI) would never end. The head is lost; Ray ends a gone driver's jobs itself. The
    process then dies at exit (SIGSEGV in Ray's C++ exit handler, whose core worker the hung
    shutdown never stopped): Ray's bug, with no sound workaround here (docs/cluster.md)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    registered = getattr(worker, "shutdown", None)
    if registered is not None:
        atexit.unregister(registered)
