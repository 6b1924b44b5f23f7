"""The Ray executor's remote side (see `harness.executors.ray`): the task each job runs as, and
how a job's failure reads on the driver. Imported by Ray's workers by reference, so it stays small."""

from __future__ import annotations

import re
import socket
import sys
from typing import TYPE_CHECKING

from harness.errors import RunFailed
from harness.executors.worker import portable

if TYPE_CHECKING:
    from ray.exceptions import RayTaskError

    from harness.executors.base import JobFn
    from harness.jobs import Job


def _call(fn: JobFn, job: Job, driver: str = ""):
    """The remote task: `fn` travels as an argument, so any picklable callable (a partial) works.
    A SystemExit from the job's code becomes the job's failure: Ray would take it for a crashed
    worker, retry the job and report a dead worker (KeyboardInterrupt is Ray's cancellation). A
    failure on another machine than the driver's (`driver`: its host name) names that node."""
    try:
        return fn(job)
    except SystemExit as e:
        raise _on_node(portable(e), driver) from None
    except Exception as e:
        failed = _on_node(e, driver)
        if failed is e:  # the driver's own machine: the job's exception as it is
            raise
        raise failed from e


def _on_node(error: Exception, driver: str) -> Exception:
    """`error`, or where this is not the driver's machine a new failure naming the node: "folder
    /data/c10 does not exist" sent the user to a folder that exists where memprox runs."""
    node = socket.gethostname()
    if driver in ("", node):
        return error
    return RunFailed(f"{str(error) or type(error).__name__} (raised on Ray node {node}, not on {driver} where "
                     "memprox runs)")


def _job_error(error: RayTaskError) -> BaseException:
    """The exception a job raised, as the local executor reports it: the exception itself, its
    traceback on stderr. Ray's wrapper reads as the worker's whole traceback in terminal colours,
    which would become the run's failure line (on screen and in summary.json)."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, Exception):  # e.g. a cause Ray could not unpickle: keep Ray's text
        return error.as_instanceof_cause() if hasattr(error, "as_instanceof_cause") else error
    trace = getattr(error, "traceback_str", "") or str(error)
    print(re.sub(r"\x1b\[[0-9;]*m", "", trace), file=sys.stderr)  # without Ray's colour codes
    return cause
