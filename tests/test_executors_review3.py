"""Executor review 3: a `--ray-address` port that accepts TCP but is no Ray is refused in seconds
(Ray tried it for ~215 s), and a job that calls sys.exit is that job's failure under the local
pool and Ray, not a dead worker retried twice and reported "killed by SIGTERM"."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from harness.errors import HarnessError, RunFailed
from harness.executors import ray_cluster
from harness.executors.local import LocalExecutor
from harness.jobs import DataSource, Job
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec

REPO_TESTS = os.path.dirname(os.path.abspath(__file__))


def exits(job: Job) -> int:
    """A job function (imported by the workers from this module) whose code calls sys.exit."""
    if job.specs[0].seed == 1:
        sys.exit(4)
    return job.specs[0].seed


def _job(seed: int) -> Job:
    return Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), seed),), requests=(), engine="single",
               source=DataSource("digits"))


# --ray-address: something answers, but it is not Ray ----------------------------------------------
def _server(reply: bytes | None) -> Iterator[int]:
    """A TCP server on loopback that answers every connection with `reply` (None: says nothing)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    conns = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            if reply is not None:
                try:
                    conn.recv(64)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for c in conns:
            c.close()
        listener.close()


@pytest.fixture
def http1_port() -> Iterator[int]:
    yield from _server(b"HTTP/1.0 400 Bad request\r\n\r\n")


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _server(None)


@pytest.fixture
def grpc_port() -> Iterator[int]:
    yield from _server(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame, as a gRPC server sends


def test_a_port_that_speaks_http1_is_not_a_ray_cluster(http1_port) -> None:
    """Before: the TCP connect passed and `ray.init` tried the port for ~215 s (5 x ~41 s)."""
    t0 = time.monotonic()
    with pytest.raises(HarnessError, match=r"not a Ray cluster \(it answered b'HTTP/1.0 ', not HTTP/2\)"):
        ray_cluster.check_reachable(f"127.0.0.1:{http1_port}")
    assert time.monotonic() - t0 < 5


def test_a_port_that_says_nothing_is_not_a_ray_cluster(silent_port, monkeypatch) -> None:
    monkeypatch.setattr(ray_cluster, "CONNECT_TIMEOUT_S", 0.5)
    t0 = time.monotonic()
    with pytest.raises(HarnessError, match=r"not a Ray cluster \(no HTTP/2 answer"):
        ray_cluster.check_reachable(f"127.0.0.1:{silent_port}")
    assert time.monotonic() - t0 < 3


def test_a_port_that_speaks_http2_passes_and_tls_is_not_probed(grpc_port, silent_port, monkeypatch) -> None:
    assert ray_cluster.check_reachable(f"127.0.0.1:{grpc_port}") == ("127.0.0.1", grpc_port)
    monkeypatch.setenv("RAY_USE_TLS", "1")  # a TLS head cannot answer a plain preface: not refused for that
    assert ray_cluster.check_reachable(f"127.0.0.1:{silent_port}") == ("127.0.0.1", silent_port)


def test_a_real_ray_head_answers_the_probe() -> None:
    """The probe against Ray's own GCS server (started by the test, without a driver)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        host, port = ray_cluster.split_address(ray.get_runtime_context().gcs_address)
        with socket.create_connection((host, port), timeout=3) as s:
            s.settimeout(3)
            assert ray_cluster._not_grpc(s) is None
    finally:
        ray.shutdown()


# sys.exit inside a job -------------------------------------------------------------------------------
def test_sys_exit_in_a_job_is_that_jobs_failure_not_a_dead_worker(monkeypatch) -> None:
    """Before: the worker process ended, the job was retried on a new worker, died again and was
    reported as `its worker died 2 times (killed by SIGTERM)`."""
    monkeypatch.syspath_prepend(REPO_TESTS)
    executor = LocalExecutor(workers=1, progress=False, fn=exits)
    try:
        t0 = time.monotonic()
        outcomes = {job.specs[0].seed: outcome for job, outcome in executor.run([_job(0), _job(1), _job(2)])}
        pids = [w.proc.pid for w in executor._pool]
    finally:
        executor.close()
    assert outcomes[0] == 0 and outcomes[2] == 2
    failure = outcomes[1]
    assert type(failure) is RuntimeError and str(failure) == "SystemExit: 4"
    assert not isinstance(failure, RunFailed)
    assert len(pids) == 1  # the one worker lived on: nothing was restarted
    assert time.monotonic() - t0 < 30


def test_a_non_exception_from_a_job_is_sent_as_a_runtime_error() -> None:
    """What reaches the driver must not be a SystemExit: the runner re-raises non-Exceptions."""
    from harness.executors.worker import attempt

    ok, payload = attempt(lambda job: sys.exit(4), None)
    assert not ok and type(payload) is RuntimeError and str(payload) == "SystemExit: 4"
    ok, payload = attempt(lambda job: (_ for _ in ()).throw(KeyboardInterrupt()), None)
    assert not ok and type(payload) is RuntimeError and str(payload) == "KeyboardInterrupt"


def test_sys_exit_in_a_ray_job_is_not_retried() -> None:
    from harness.executors.ray import _call

    with pytest.raises(RuntimeError, match=r"^SystemExit: 4$"):
        _call(exits, _job(1))
    assert _call(exits, _job(0)) == 0
