"""Attacks on the open-head check of a joined Ray cluster (`harness.executors.ray_auth`) that broke it.

- A Ctrl-C during the check (a separate process, up to 30 s on a head that stopped answering) came
  after Ray had joined but before memprox recorded the connection as its own (`_joined`): a
  notebook's next run then took the connection for the caller's and ran its jobs on that cluster,
  a run asking for a local Ray included. Now `_join` records it before the check.
- The check read its process's output as strict text: one byte that was not UTF-8 raised
  UnicodeDecodeError out of the join, after it had joined. Now it is read leniently (and the
  process's stderr, never used, is not read at all).
- The warning was `print(file=sys.stderr)`: with stderr closed (`2>&-`) it went into stdout, and a
  stderr that refused it raised out of the join. Now `console.write_line`, the line dropped there."""

from __future__ import annotations

import errno
import io
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors import ray_auth  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402

HEAD = "10.0.0.5:6379"


class FakeRay:
    """Ray as `_join`, `_init` and a leave use it: a connection with a job id per `init`."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.up, self.job = False, 0

    def init(self, address: str | None = None, **kwargs: object) -> None:
        self.calls.append(("join", address))
        self.up, self.job = True, self.job + 1

    def is_initialized(self) -> bool:
        return self.up

    def get_runtime_context(self) -> SimpleNamespace:
        assert self.up, "get_runtime_context() without a connection starts a local Ray"
        return SimpleNamespace(get_job_id=lambda: f"{self.job:08x}")

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.up = False


def test_ctrl_c_during_the_check_leaves_a_connection_memprox_knows_it_made(monkeypatch) -> None:
    fake = FakeRay()

    def start_local(cpus: int) -> None:
        fake.calls.append("start local")
        fake.up, fake.job = True, fake.job + 1
        ray_executor._own_local = "local-head"

    def interrupted(gcs: str) -> bool:
        raise KeyboardInterrupt  # the user's Ctrl-C while the check's process runs

    monkeypatch.setattr(ray_executor, "ray", fake)
    monkeypatch.setattr(ray_executor, "check_reachable", lambda target: ("10.0.0.5", 6379))
    monkeypatch.setattr(ray_executor, "_gcs_address", lambda: HEAD if fake.up else None)
    monkeypatch.setattr(ray_executor, "_start_local", start_local)
    monkeypatch.setattr(ray_executor, "_stop_reaper", lambda: None)
    monkeypatch.setattr(ray_executor, "_joined", None)
    monkeypatch.setattr(ray_executor, "_own_local", None)
    monkeypatch.setattr(ray_auth, "open_cluster", interrupted)
    with pytest.raises(KeyboardInterrupt):
        RayExecutor(address=HEAD, progress=False).start()
    assert ray_executor._own_connection() == HEAD  # memprox's connection, not the caller's
    RayExecutor(progress=False).start()  # the notebook's next run asks for a local Ray
    assert fake.calls == [("join", HEAD), "shutdown", "start local"]  # it left the cluster first


def test_output_that_is_not_utf8_does_not_break_the_join(monkeypatch) -> None:
    monkeypatch.setattr(ray_auth, "PROBE", "import sys\nsys.stderr.buffer.write(b'\\xff\\xfe warning\\n')\n"
                                           "sys.stdout.buffer.write(b'\\xe9t\\xe9\\n')\nprint('open')\n")
    assert ray_auth.open_cluster(HEAD) is True
    monkeypatch.setattr(ray_auth, "PROBE", "import sys\nsys.stdout.buffer.write(b'token \\xff')\n")
    assert ray_auth.open_cluster(HEAD) is None  # the last word is not an answer: not known


def test_the_warning_never_goes_to_stdout_nor_ends_the_run(monkeypatch, capsys) -> None:
    """With stderr closed (`2>&-`, sys.stderr None) print(file=None) wrote the warning into stdout,
    where the leaderboard goes; a stderr that refuses the line raised out of the join."""
    monkeypatch.setattr(ray_auth, "open_cluster", lambda gcs: True)
    monkeypatch.setattr(sys, "stderr", None)
    ray_auth.warn_if_open(HEAD, HEAD)
    assert capsys.readouterr().out == ""

    class Refusing(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Refusing())
    ray_auth.warn_if_open(HEAD, HEAD)  # no BrokenPipeError out of the join
