"""A job that fails on another Ray node than the driver's: its failure line names the node once, the run
once, and keeps the note of the recorder that raised. A run's own failure (RunFailed: a loss that became
non-finite, `run L [digest]: ...`) read "job L: run L [digest]: ... (raised on Ray node ...)" there, where
the driver's machine says "run L [digest]: ...". No Ray is started: `_call` is the task's body, and the
exception goes through cloudpickle as Ray sends it."""

from __future__ import annotations

import socket

import pytest

cloudpickle = pytest.importorskip("ray.cloudpickle")

from harness.errors import RunFailed  # noqa: E402
from harness.executors.ray_jobs import _call  # noqa: E402
from harness.recorders.bank import name_recorder  # noqa: E402
from harness.runner import failure_line  # noqa: E402

LABEL = "digits noise=0.1 mlp seed0"
HERE = socket.gethostname()


class _Job:
    def label(self) -> str:
        return LABEL


def _on_batch() -> None:
    pass


def _failure(fn, driver: str) -> str:
    with pytest.raises(Exception) as caught:
        _call(fn, _Job(), driver=driver)  # type: ignore[arg-type]
    return failure_line(_Job(), cloudpickle.loads(cloudpickle.dumps(caught.value)))  # type: ignore[arg-type]


def _diverged(job) -> None:
    raise RunFailed(f"run {LABEL} [6cd64eeb146ff6a4d0f6]: the loss became non-finite at epoch 3")


def _recorder_bug(job) -> None:
    raise name_recorder(ValueError("boom"), "train_correct", _on_batch)


def _plain(job) -> None:
    raise FileNotFoundError("folder /data/c10 does not exist")


def test_a_runs_own_failure_names_the_run_once() -> None:
    assert _failure(_diverged, HERE) == f"run {LABEL} [6cd64eeb146ff6a4d0f6]: the loss became non-finite at epoch 3"
    assert _failure(_diverged, "login-1") == (f"run {LABEL} [6cd64eeb146ff6a4d0f6]: the loss became non-finite at "
                                              f"epoch 3 (raised on Ray node {HERE}, not on login-1 where memprox runs)")


def test_another_failure_is_named_by_its_job_and_node() -> None:
    assert _failure(_plain, HERE) == f"job {LABEL}: folder /data/c10 does not exist"
    assert _failure(_plain, "login-1") == (f"job {LABEL}: folder /data/c10 does not exist (raised on Ray node "
                                           f"{HERE}, not on login-1 where memprox runs)")


def test_a_recorder_that_raised_on_another_node_is_named() -> None:
    assert _failure(_recorder_bug, "login-1") == (
        f"job {LABEL}: boom (raised on Ray node {HERE}, not on login-1 where memprox runs) (raised in recorder "
        "train_correct (_on_batch): a proxy that needs it fails on every run that records it; drop that proxy "
        "from --proxies to score the others)")
