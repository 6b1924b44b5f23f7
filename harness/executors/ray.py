"""`--executor ray`: jobs on a local Ray (`--workers N` at a time) or a cluster (`--ray-address`),
each reserving `num_cpus` (its torch threads) and `num_gpus` (`--gpus-per-run` on CUDA).

Results come back through Ray's object store and the driver writes the run store, so workers need
the package and the dataset, not the store; a job writes in-run checkpoints into the store only
where its node sees the probe file the driver wrote there for the run (`ray_probe`). A job whose
worker or node dies is retried once by Ray, then reported failed; an exception inside a job is not
retried. Token authentication is left on.
What memprox adds, because Ray alone gets these wrong for a command-line tool (docs/cluster.md):

- A cluster to join is checked before `ray.init` (syntax, name, a TCP connect, short timeouts) and
  `ray.init` gets a bounded window; `auto` means RAY_ADDRESS or the cluster `ray start` recorded
  here, never "any Ray running here" (which could join another user's private Ray).
- While jobs run the head is checked every second; one gone for `LOST_AFTER_S` ends the run with one
  line (`ClusterLost`, exit 1, stored runs kept) before Ray would end the process after 60 s; a job
  no live node can hold after a node was lost is reported failed naming it, not left waiting (`ray_wait`).
- Each job, unless it runs the driver's own install, checks that its node's memprox is the driver's (`ray_same_code`): a
  node with another version or commit trained with its own code, silently; now it ends the run. A node
  with another torch, numpy, scikit-learn or cleanlab is said once, in a warning line (`ray_versions`).
- A local Ray listens on loopback only, with a private (0600) token file, and a reaper kills its
  processes once the driver is gone, kill -9 included (Ray's agents outlive a killed driver). A
  cluster joined without token authentication is said in one warning line (`ray_auth`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, cast

from harness.errors import HarnessError
from harness.executors import register_executor
from harness.executors.base import (
    Executor,
    JobFn,
    JobPlacement,
    Outcome,
    check_workers,
    warn_if_oversubscribed,
)
from harness.executors.cpus import usable_cpus
from harness.executors.ray_auth import warn_if_open
from harness.executors.ray_cluster import (  # noqa: F401  (re-exported: tests and users reach them here)
    CLUSTER_HELP,
    CONNECT_TIMEOUT_S,
    RESOLVE_TIMEOUT_S,
    SESSION_VAR,
    _answers,
    _environ,
    _gcs_address,
    _is_loopback,
    _loopback_only,
    _nudge_reaper,
    _start_reaper,
    check_fits,
    check_reachable,
    cluster_address,
    ensure_private_token,
    split_address,
    token_file,
)
from harness.executors.ray_jobs import (  # noqa: F401  (_call: re-exported)
    STOP_GRACE_S,
    _call,
    _job_error,
    ask_to_stop,
    finished_results,
    forget_stop,
    new_stop_key,
    submit,
)
from harness.executors.ray_leave import LEAVE_WAIT_S, ended_within, finished_within, hung_leave, shutdown_within
from harness.executors.ray_nodes import NodeWatch
from harness.executors.ray_probe import StoreProbe
from harness.executors.ray_same_code import check_outcome, differs, same_code
from harness.executors.ray_signals import _signals_kept
from harness.executors.ray_timeout import JobClocks
from harness.executors.ray_versions import NodeVersions
from harness.executors.ray_wait import LOST_AFTER_S, POLL_S, ClusterLost, collect  # noqa: F401  (re-exported)
from harness.option_checks import check_seconds

if TYPE_CHECKING:
    import torch

    from harness.config import ExperimentConfig
    from harness.jobs import Job

try:
    import ray
    from ray.exceptions import RayError
except ImportError:  # the optional extra
    ray = None  # type: ignore[assignment]

#: Seconds `ray.init` may try to reach a cluster that accepted the TCP connect (a wrong token, a
#: port that is not Ray's); Ray's default is 20 s or more (RAY_gcs_server_port_wait_time_s).
JOIN_WAIT_S = 5
#: Seconds a stop on the caller's connection waits for its jobs to end before it deletes their key:
#: a job ignoring the interrupt is killed after STOP_GRACE_S; Ray's retry of it stops as it starts.
ENDED_WAIT_S = STOP_GRACE_S + 10.0
#: The reaper of the local Ray this process started (None: none started). Module-level because
#: the local Ray outlives any one executor, and closing the pipe would reap it.
_reaper: subprocess.Popen | None = None
#: The head (GCS address) of the local Ray memprox started in this process, by any executor: a notebook's
#: second run stops the first one's Ray the same way; a Ray the caller started after ours is not ours.
_own_local: str | None = None
#: The cluster connection memprox made (--ray-address) here: (its Ray job, one per `ray.init`; the address
#: joined). Left on Ctrl-C. A job, not the head's address: a caller's reconnection to it is their own.
_joined: tuple[str, str] | None = None


def _stop_reaper() -> None:
    """Let the reaper run now (the local Ray is shut down) and wait for it briefly."""
    global _reaper
    if _reaper is not None:
        assert _reaper.stdin is not None  # started with stdin=PIPE (`_start_reaper`)
        _reaper.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            _reaper.wait(timeout=15)
        _reaper = None


def _head_answers(head: tuple[str, int] | None) -> bool:
    return head is None or _answers(*head, timeout=POLL_S)


def _join(address: str | None, target: str) -> None:
    """Join the checked cluster, within JOIN_WAIT_S. `auto` is passed on as `auto`: it finds the
    same cluster, and Ray then uses this machine's token for it as it does for `ray.init()`. A
    cluster without token authentication is joined with a warning line. Sets `_joined` before that
    check: a Ctrl-C in it (30 s at most) left a connection memprox did not know it made, which a
    notebook's next run, one for a local Ray included, then ran its jobs on."""
    global _joined
    wait = os.environ.get("RAY_gcs_server_port_wait_time_s", str(JOIN_WAIT_S))
    try:
        with _environ(RAY_gcs_server_port_wait_time_s=wait), _signals_kept(ray):
            ray.init(address="auto" if address == "auto" else target, log_to_driver=False)
    except Exception as e:  # ConnectionError, AuthenticationError, a version mismatch, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"could not join the Ray cluster at {target} ({reason}); if it uses token authentication, "
                           "set RAY_AUTH_MODE=token and the cluster's own token (RAY_AUTH_TOKEN, or the file "
                           f"~/.ray/auth_token: a copy of the head's) before running memprox; {CLUSTER_HELP}") from None
    _joined = (str(_job()), target)  # `_init` sets it too (after a stand-in's join in tests)
    warn_if_open(target, _gcs_address())  # a head without token authentication: one line (`ray_auth`)


def _job() -> str | None:
    """The Ray job of this process's connection (None: none; `get_runtime_context` would start a Ray)."""
    return ray.get_runtime_context().get_job_id() if ray.is_initialized() else None


def _leave() -> bool:
    """Leave the cluster memprox joined: Ray ends this driver's tasks there (their workers were gone
    0.3 s after, on a `ray start` cluster here), and nothing else of the cluster's. Within
    LEAVE_WAIT_S: a hung head hung Ray's shutdown for good (`ray_leave`); then the connection is
    given up with a line, and its jobs end when Ray notices the driver is gone."""
    global _joined
    target = _joined[1] if _joined is not None else "the cluster"
    _joined = None
    if shutdown_within(ray, LEAVE_WAIT_S, target):
        return True
    print(f"warning: could not leave the Ray cluster at {target} within {LEAVE_WAIT_S:.0f} s (its head does "
          "not answer); jobs of this run still there end when the cluster notices this driver is gone",
          file=sys.stderr)
    return False


def _ask_to_stop(key: str, refs: list[ray.ObjectRef]) -> None:
    """Ask the jobs `refs` on the caller's connection to stop (within LEAVE_WAIT_S); once all have
    ended (ENDED_WAIT_S at most), so that none runs on after its store entry is unlocked, delete the key."""
    try:
        asked = finished_within(lambda: ask_to_stop(key), LEAVE_WAIT_S)
    except (RayError, OSError):  # raised from the stop, it replaced the Ctrl-C's line with a traceback
        asked = False
    if not asked:
        print(f"warning: could not ask this run's Ray jobs to stop within {LEAVE_WAIT_S:.0f} s (the cluster's head "
              "does not answer); they end when this process's connection does", file=sys.stderr)
        return
    with contextlib.suppress(RayError, OSError):  # Ray cannot tell or cannot delete: the key stays (a few bytes)
        if ended_within(ray, refs, ENDED_WAIT_S):
            finished_within(lambda: forget_stop(key), LEAVE_WAIT_S)


def _stop_local() -> None:
    """Stop the local Ray memprox started, its processes with it (the reaper's last look)."""
    global _own_local
    ray.shutdown()
    _stop_reaper()
    _own_local = None


def _own_connection() -> str | None:
    """The Ray this process is connected to, where memprox made the connection: "local" (the local
    Ray it started) or the address it joined; None without a connection or for the caller's own."""
    if not ray.is_initialized():
        return None
    if _own_local is not None and _gcs_address() == _own_local:
        return "local"
    return _joined[1] if _joined is not None and _job() == _joined[0] else None


def _start_local(cpus: int) -> None:
    """A new local Ray of `cpus` CPUs (never one RAY_ADDRESS names: that is what --ray-address is
    for), on the loopback interface, with a private token file, reaped when this process ends."""
    global _reaper, _own_local
    ensure_private_token()
    mark = secrets.token_hex(8)
    _stop_reaper()
    _reaper = _start_reaper(f"{SESSION_VAR}={mark}")
    with _loopback_only(), _environ(**{SESSION_VAR: mark}), _signals_kept(ray):
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    _nudge_reaper(_reaper)
    _own_local = _gcs_address()
    ip = ray.util.get_node_ip_address()
    if not _is_loopback(ip):
        print(f"warning: this Ray version started the local cluster on {ip}, reachable from the network and "
              "protected by its token only", file=sys.stderr)


# the executor ---------------------------------------------------------------------------------
def _check_installed() -> None:
    if ray is None:
        raise HarnessError("--executor ray needs Ray, an optional extra: pip install -e '.[ray]' "
                           "(or pip install 'memprox[ray]')")


@register_executor
class RayExecutor(Executor):
    name = "ray"
    description = "a local Ray on this machine, or a Ray cluster (--ray-address)"
    options = ("workers", "ray_address", "job_timeout")

    def __init__(self, workers: int | None = None, address: str | None = None, progress: bool = True,
                 fn: JobFn | None = None, threads: int = 1, job_timeout: float | None = None) -> None:
        _check_installed()
        if workers is not None and workers < 1:
            raise HarnessError(f"--workers must be at least 1, got {workers}")
        check_seconds(job_timeout, "RayExecutor(job_timeout=...)")
        self.workers, self.address, self.progress, self.job_timeout = workers, address, progress, job_timeout
        self.fn = fn  # None: harness.jobs.run_job
        self.threads = threads  # of each job: a local Ray gets --workers x threads CPUs
        self._stop_key: str | None = None  # of the current run, on a connection the caller made
        self._finished: list[Outcome] = []  # jobs found finished when a run was stopped (take_finished)
        self._versions = NodeVersions()  # a node's other torch, numpy, ...: said once (`ray_versions`)
        # a cluster to join is checked now, before the experiment writes anything
        self.target = cluster_address(address) if address else None
        self.head = check_reachable(self.target) if self.target else None

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        _check_installed()
        check_workers(cfg)
        if cfg.ray_address is not None:
            if not isinstance(cfg.ray_address, str) or not cfg.ray_address:
                raise HarnessError(f"--ray-address must be the head's HOST:PORT or auto (got {cfg.ray_address!r}); "
                                   "pass e.g. --ray-address 10.0.0.5:6379, or leave it out to start a local Ray")
            if cfg.workers is not None:
                raise HarnessError("--workers sizes a local Ray; a cluster joined with --ray-address has its own "
                                   "workers: pass one of them")

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> RayExecutor:
        threads = cfg.threads or 1
        if cfg.ray_address is None:  # a local Ray shares this machine's CPUs
            cpus = usable_cpus()
            warn_if_oversubscribed(cfg.workers or max(1, cpus // threads), threads, cpus)
        return cls(workers=cfg.workers, address=cfg.ray_address, progress=cfg.progress, threads=threads,
                   job_timeout=cfg.job_timeout)

    def placement(self, cfg: ExperimentConfig, device: torch.device) -> JobPlacement:
        placed = super().placement(cfg, device)
        if device.type == "cuda":  # Ray sets each worker's visible GPU: the job's device is plain `cuda`
            placed = JobPlacement("cuda", placed.threads, placed.progress, placed.num_cpus, placed.num_gpus)
        return placed

    def start(self) -> None:
        self._init()

    def _init(self) -> None:
        """Connect as this run asks: a notebook's earlier run left memprox's own connection up for
        reuse, and a run with another --ray-address (or none) ran on that Ray instead of its own."""
        global _joined
        if (own := _own_connection()) is not None and own != (self.target or "local"):
            _stop_local() if own == "local" else _leave()
            if not self.target:  # the local Ray to come has another head
                self.head = None
        if hung := hung_leave():  # here or at a stop: the connection, half shut, is no one's to run on
            raise HarnessError(f"the Ray cluster at {hung} does not answer and could not be left: restart "
                               "Python to run again")
        if not ray.is_initialized():
            if self.target:
                _join(self.address, self.target)
                _joined = (str(_job()), self.target)
            else:  # --workers jobs at a time, each reserving its threads; by default as many as the CPUs this
                # process may use hold, at least one: a Ray of usable_cpus() CPUs refused a run of more --threads
                # ("no node can run it") that the local pool and the warning above run one at a time
                _start_local(self.threads * (self.workers or max(1, usable_cpus() // self.threads)))
        if self.head is None:  # a local Ray, or one this process had already joined
            try:
                self.head = split_address(ray.get_runtime_context().gcs_address)
            except Exception:  # e.g. a Ray Client connection: no head to watch, Ray's own timeouts apply
                self.head = None

    @property
    def started_ray(self) -> bool:
        """Whether this executor runs on a local Ray memprox started (this executor or an earlier one)."""
        return self.target is None and _own_connection() == "local"

    def shutdown(self) -> None:
        """Stop the local Ray memprox started (a cluster it joined, or a Ray the caller started, keeps
        running); the next `run` starts another and watches its head."""
        if self.started_ray:
            _stop_local()
            self.head = None

    def close(self) -> None:
        """Training is over (the runner's call before evaluation): stop the local Ray memprox started,
        as the local executor stops its pool. Its idle workers and object store stayed up through
        evaluation (after a 2-worker run: 11 processes, 1.7 GiB resident, shared pages counted in
        each): the near-duplicate search ran beside them, and its memory check right before it counted
        their memory as taken, so it could refuse a search that fit without them. A cluster memprox
        joined, or the caller's Ray, is left as it is."""
        self.shutdown()

    def _lost(self) -> ClusterLost:
        where = f"at {self.target}" if self.target else "this run started on this machine"
        return ClusterLost(f"lost the Ray cluster {where}: its head has not answered for {LOST_AFTER_S:.0f} s; "
                           "runs already stored are kept, rerun to resume once the cluster is back")

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        if not jobs:
            return
        from harness.jobs import run_job

        self._init()
        nodes = NodeWatch(ray)  # before the check: a node lost after it is one the watch knew
        check_fits(jobs)
        # a connection the caller made is not memprox's to end: its jobs stop themselves when asked
        self._stop_key = None if _own_connection() else new_stop_key()
        probe = StoreProbe({root for job in jobs if (root := getattr(job, "checkpoint_root", None))})  # jobs check
        clocks = JobClocks(ray, self.job_timeout, probe.live is not None) if self.job_timeout else None
        pending: dict[ray.ObjectRef, Job] = {}
        try:
            # a job on another node or install first checks that its memprox is this one (`ray_same_code`)
            pending.update(submit(ray, same_code(self.fn or run_job), jobs, self._stop_key, clocks, probe.live))
            outcomes = cast(Generator[Outcome, None, None], collect(ray, pending, self.head, self._lost, nodes,
                                                                  clocks, _head_answers, self.progress))
            with contextlib.closing(outcomes):  # as `yield from` would: a Ctrl-C closes it at once
                for job, outcome in outcomes:
                    check_outcome(outcome, f" at {self.target}" if self.target else "")
                    yield job, self._versions.result(outcome)
        finally:  # normal end: nothing left; Ctrl-C or a consumer error: keep what finished, stop the rest
            self._finished = [(job, self._versions.result(outcome))
                              for job, outcome in (finished_results(ray, pending) if pending else [])]
            try:
                if pending or nodes.given_up:  # a job given up for a lost node is still in Ray's queue
                    self._stop({**pending, **nodes.given_up})
            finally:  # after the stop (no job of the run is left to read it), even one a second Ctrl-C cut short
                probe.remove()
            if clocks is not None:  # after the stop: a second Ctrl-C in it must not skip the stop
                clocks.forget()

    def take_finished(self) -> list[Outcome]:
        finished, self._finished = self._finished, []
        return [(job, outcome) for job, outcome in finished if not differs(outcome)]  # trained by other code

    def _stop(self, pending: dict[ray.ObjectRef, Job]) -> None:
        """Stop the outstanding jobs without `ray.cancel`, which races a job that just finished
        (ray-project/ray#54846) and aborted the driver (docs/cluster.md): shut down a local Ray memprox
        started, leave a cluster it joined (whatever a probe of its head says), or on the caller's
        connection ask the jobs to stop themselves (`_ask_to_stop`). Each step within a bound."""
        if self.started_ray:
            self.shutdown()
        elif _joined is not None and _job() == _joined[0]:
            _leave()
        elif self._stop_key is not None:
            _ask_to_stop(self._stop_key, list(pending))
