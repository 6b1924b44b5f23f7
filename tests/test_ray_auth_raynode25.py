"""A Ray cluster joined without token authentication is said in one warning line
(`harness.executors.ray_auth`). Before, memprox joined an open head silently (docs/cluster.md said so).

The check asks the head from a separate process with RAY_AUTH_MODE=disabled and no token: a head that
enforces tokens refuses (AuthenticationError), an open one answers. Here the separate process's side is
a stand-in where Ray's answer is not the point, and a real local Ray (token by default) for the refusal;
the open side needs a head started with `ray start` (a slow test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from _processes import live_with_env  # noqa: E402

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors import ray_auth  # noqa: E402
from harness.executors.ray_auth import open_cluster, warn_if_open  # noqa: E402

#: Answers its address argument where it runs as the check must (no token, auth disabled), else "bad-env".
STAND_IN = ("import os, sys\n"
            "clean = os.environ.get('RAY_AUTH_MODE') == 'disabled' and not any(\n"
            "    name in os.environ for name in ('RAY_AUTH_TOKEN', 'RAY_AUTH_TOKEN_PATH'))\n"
            "print('starting'); print(sys.argv[1] if clean else 'bad-env')\n")


def test_the_check_runs_without_a_token_and_reads_the_answer(monkeypatch) -> None:
    monkeypatch.setattr(ray_auth, "PROBE", STAND_IN)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/elsewhere/token")
    assert [open_cluster("open"), open_cluster("token"), open_cluster("anything")] == [True, False, None]
    monkeypatch.setattr(ray_auth, "PROBE", "import time; time.sleep(60)")
    monkeypatch.setattr(ray_auth, "PROBE_WAIT_S", 0.5)
    assert open_cluster("open") is None  # no answer in time: not known, nothing said


def test_an_open_cluster_is_one_warning_line_and_nothing_else_is_said(monkeypatch, capsys) -> None:
    asked: list[str] = []
    answers = {"10.0.0.5:6379": True, "10.0.0.6:6379": False, "10.0.0.7:6379": None}
    monkeypatch.setattr(ray_auth, "open_cluster", lambda gcs: asked.append(gcs) or answers[gcs])
    for gcs in answers:
        warn_if_open(f"head-{gcs}", gcs)
    warn_if_open("ray://10.0.0.5:10001", "10.0.0.5:6379")  # a Ray Client address: its GCS is not this port
    warn_if_open("10.0.0.5:6379", None)
    assert asked == list(answers)
    assert capsys.readouterr().err.splitlines() == [
        "warning: the Ray cluster at head-10.0.0.5:6379 does not use token authentication (its head answered a "
        "request without a token): anyone who reaches its port can run code on every node; restart its nodes "
        "with RAY_AUTH_MODE=token and one token (docs/cluster.md, A cluster)"]


def test_joining_a_cluster_checks_its_head(monkeypatch, capsys) -> None:
    """`_join` (memprox's own join, --ray-address) asks about the head Ray connected to."""
    asked: list[str] = []
    monkeypatch.setattr(ray_executor, "ray", SimpleNamespace(init=lambda **kwargs: None, is_initialized=lambda: False))
    monkeypatch.setattr(ray_executor, "_joined", None)  # `_join` records its connection (before the check)
    monkeypatch.setattr(ray_executor, "_gcs_address", lambda: "10.0.0.5:6379")
    monkeypatch.setattr(ray_auth, "open_cluster", lambda gcs: asked.append(gcs) or True)
    ray_executor._join("auto", "10.0.0.5:6379")
    assert asked == ["10.0.0.5:6379"]
    assert capsys.readouterr().err.startswith("warning: the Ray cluster at 10.0.0.5:6379 does not use token "
                                              "authentication")


def test_a_head_with_token_authentication_refuses_the_check() -> None:
    """A local Ray (Ray 2.59+ starts it with token authentication): the check's request is refused."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert open_cluster(ray.get_runtime_context().gcs_address) is False
    finally:
        if started:
            ray.shutdown()


@pytest.mark.slow
def test_a_head_started_without_token_authentication_answers_the_check() -> None:
    """`ray start --head` in a shell with RAY_AUTH_MODE=disabled (its own temp dir; its processes
    found by an environment entry and killed, never `ray stop`, which stops every Ray here)."""
    tmp = Path(tempfile.mkdtemp(prefix="rn25", dir="/tmp"))
    mark = f"RN25_HEAD={tmp.name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(tmp), RAY_AUTH_MODE="disabled", HOME=str(tmp), RN25_HEAD=tmp.name)
    port = 47000 + os.getpid() % 1000
    try:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                        "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
                       env=env, check=True, capture_output=True, timeout=180)
        assert open_cluster(f"127.0.0.1:{port}") is True
    finally:
        for pid in live_with_env(mark):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def test_what_cluster_md_says_of_the_check_is_the_codes(monkeypatch, capsys) -> None:
    page = " ".join((Path(__file__).resolve().parents[1] / "docs" / "cluster.md").read_text().split())
    quoted = re.findall(r"`(warning: the Ray cluster at [^`]*) \.\.\.`", page)
    monkeypatch.setattr(ray_auth, "open_cluster", lambda gcs: True)
    warn_if_open("HEAD_IP:6379", "HEAD_IP:6379")
    assert len(quoted) == 1 and capsys.readouterr().err.startswith(quoted[0])
    assert f"neither answer within {ray_auth.PROBE_WAIT_S:g} s" in page
