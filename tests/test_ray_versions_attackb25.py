"""Attacks on the node package-version line (`harness.executors.ray_versions`) that broke it.

- A job that failed on a node whose torch, numpy, scikit-learn or cleanlab differs from the
  driver's said nothing of the versions: the line came only with a result, so a node whose every job
  failed (an API memprox cannot use: the very case the versions explain) was never said. Now the
  job's exception carries them (`FAILED_WITH`) and the driver says the line once, the failure as it
  was raised. Checked once with a real local Ray as well (a job raising AttributeError, the driver
  standing in for torch 0.0.1): one line, both jobs' AttributeErrors as their outcomes.
- A job's own result that is a 4-tuple led by an array was compared element-wise with the markers:
  ValueError ("truth value of an array ... is ambiguous") instead of the result."""

from __future__ import annotations

import errno
import io
import sys

import numpy as np
import pytest

pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402

from harness.executors.ray_same_code import differs, same_code  # noqa: E402
from harness.executors.ray_versions import (  # noqa: E402
    FAILED_WITH,
    OTHER,
    NodeVersions,
    package_versions,
    warning_line,
)


def _torch_at(version: str) -> tuple[tuple[str, str], ...]:
    """This process's package versions with torch's replaced: a driver whose torch differs."""
    return tuple((p, version if p == "torch" else v) for p, v in package_versions())


def _numpy_api_gone(job: object) -> object:
    raise AttributeError("module 'numpy' has no attribute 'trapz'")


def test_a_job_that_failed_on_a_node_with_other_versions_says_them_once(capsys) -> None:
    checked = same_code(_numpy_api_gone, versions=_torch_at("0.0.1"))
    notes, raised = NodeVersions(), []
    for _ in range(2):
        with pytest.raises(AttributeError) as failed:
            checked("job")
        raised.append(cloudpickle.loads(cloudpickle.dumps(failed.value)))  # as Ray sends it to the driver
    assert [notes.result(error) for error in raised] == raised  # the failures as they were raised
    node, found = getattr(raised[0], FAILED_WITH)
    torch_here = dict(package_versions())["torch"]
    assert found == (("torch", torch_here, "0.0.1"),)
    assert capsys.readouterr().err.splitlines() == [warning_line(node, found)]


def test_a_job_that_failed_on_a_node_with_the_drivers_versions_is_left_as_it_was(capsys) -> None:
    with pytest.raises(AttributeError) as failed:
        same_code(_numpy_api_gone, versions=package_versions())("job")
    assert not hasattr(failed.value, FAILED_WITH)
    assert NodeVersions().result(failed.value) is failed.value
    assert capsys.readouterr().err == ""


def test_a_result_led_by_an_array_is_the_result(capsys) -> None:
    own = (np.arange(3.0), "b", "c", "d")
    assert NodeVersions().result(own) is own and not differs(own)
    wrapped = same_code(lambda job: own, versions=_torch_at("0.0.1"))("job")  # a node whose torch differs
    assert NodeVersions().result(wrapped) is own
    assert capsys.readouterr().err.count("warning: Ray node") == 1


class _Refusing(io.StringIO):
    """A stderr that refuses every line: `error` raised by each write."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


@pytest.mark.parametrize("error", [BrokenPipeError(errno.EPIPE, "Broken pipe"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_stderr_that_refuses_the_line_does_not_stop_the_result(monkeypatch, error: OSError) -> None:
    """Said in `RayExecutor.run`'s `finally` before the outstanding jobs are stopped: a raise there
    skipped the stop (a Ctrl-C with `2>&1 | head` gone)."""
    monkeypatch.setattr(sys, "stderr", _Refusing(error))
    found = (("torch", "2.5.1+cpu", "2.6.0"),)
    assert NodeVersions().result((OTHER, "result", "gpu-3", found)) == "result"
