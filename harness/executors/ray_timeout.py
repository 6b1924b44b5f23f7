"""--job-timeout under Ray (see `harness.executors.ray`): when each job started, and stopping one
that has run past its limit.

The driver hands Ray every job at once and Ray queues them, so a job's submission is not its start:
each attempt of a job puts a key of its own (`START_PREFIX<run>-<job index>-<attempt>`) in Ray's
key-value store as it starts (`mark_started`), and the driver lists its run's keys at most once a
second (`JobClocks`). A job's clock starts when the driver first sees its attempt's key, up to a second
late; Ray's retry of a job whose worker died starts it again, as the local pool's does. One listing a
second, not one read per job: a run has thousands of jobs.

A job past its limit whose result has not arrived is stopped with `ray.cancel(force=True)`: Ray kills
its worker (SIGKILL, which a stopped or deadlocked process cannot ignore) and does not retry a
cancelled task. Ray's cancel races a task that has just finished (ray-project/ray#54846: the driver
aborted); the result is looked for first, which leaves that race only to a job that ends within the
instant between the look and the cancel. The keys are deleted when the run ends.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any

from harness.errors import RunFailed
from harness.executors.base import timed_out

#: Ray's key-value namespace of the start marks (the stop keys' too), the prefix of a run's keys, how
#: often the driver lists them, and how long one call to the head may take.
NAMESPACE = b"memprox"
START_PREFIX = "start-"
LOOK_EVERY_S = 1.0
CALL_S = 2.0


def _gcs() -> Any:
    from ray.experimental.internal_kv import internal_kv_get_gcs_client

    return internal_kv_get_gcs_client()


def mark_started(start_key: str | None) -> None:
    """The job's side, as it starts: put its attempt's key. A head that does not answer within CALL_S
    leaves the job without a mark: it runs, and the driver cannot time it (it says so at the end)."""
    if start_key is None:
        return
    try:
        _gcs().internal_kv_put(f"{start_key}-{secrets.token_hex(4)}".encode(), b"1", True, NAMESPACE,
                               timeout=CALL_S)
    except Exception:  # (RpcError, OSError, no client: the job must not fail for a clock)
        pass


class JobClocks:
    """The driver's side: the start of each job's current attempt, and the jobs past their limit."""

    def __init__(self, ray: Any, limit: float, checkpoints: bool) -> None:
        self.ray, self.limit, self.checkpoints = ray, limit, checkpoints
        self.refs: list[Any] = []  # job index -> its ref (set once the jobs are submitted)
        self.prefix = f"{START_PREFIX}{secrets.token_hex(8)}-"
        self.starts: dict[Any, float] = {}  # ref -> time.monotonic() its current attempt was first seen
        self._seen: set[bytes] = set()
        self._looked = -LOOK_EVERY_S
        self.blind = False  # a listing failed: some jobs may go untimed

    def key(self, index: int) -> str:
        """The start key of job `index` (`mark_started` adds the attempt)."""
        return f"{self.prefix}{index}"

    def look(self) -> None:
        """List this run's start keys (at most once per LOOK_EVERY_S); a new key starts its job's clock."""
        now = time.monotonic()
        if now - self._looked < LOOK_EVERY_S:
            return
        self._looked = now
        try:
            keys = _gcs().internal_kv_keys(self.prefix.encode(), NAMESPACE, timeout=CALL_S)
        except Exception:  # (the head's watch in the executor decides whether it is gone)
            self.blind = True
            return
        for key in set(keys) - self._seen:
            self._seen.add(key)
            index = key.decode()[len(self.prefix):].split("-")[0]
            if index.isdigit() and int(index) < len(self.refs):
                self.starts[self.refs[int(index)]] = now

    def stop_overdue(self, pending: Mapping[Any, Any]) -> tuple[Any, RunFailed] | None:
        """One pending job past its limit, cancelled, with its failure; None if there is none. A job
        whose result has arrived is left to the caller, which reads it as any other."""
        self.look()
        now = time.monotonic()
        for ref, start in self.starts.items():
            if ref in pending and now - start >= self.limit:
                if self.ray.wait([ref], timeout=0)[0]:
                    return None  # it finished at its limit: kept
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # (it ended meanwhile, or the head is gone: reported all the same)
                    pass
                del self.starts[ref]
                return ref, timed_out(pending[ref], self.limit, self.checkpoints)
        return None

    def forget(self) -> None:
        """Delete this run's start keys (best effort: a head that does not answer keeps a few bytes)."""
        if self.blind:
            print("warning: Ray's key-value store did not answer at times during this run, so --job-timeout "
                  "may not have timed every job", file=sys.stderr)
        try:
            _gcs().internal_kv_del(self.prefix.encode(), True, NAMESPACE, timeout=CALL_S)
        except Exception:
            pass
