"""A Ray node that cannot import a module the jobs need (memprox itself, or one of the user's) ends
the run with one line naming the fix. Before, each job failed with Ray's unpickling traceback as
its failure line ("System error: No module named 'harness'" and fifteen lines of Ray's frames, on a
two-node cluster whose second node had no memprox) and the run went on, failing every job sent
there. Imports only what memprox had before the check, so it runs (and fails) on the old code."""

from __future__ import annotations

import sys
import types

import pytest

ray = pytest.importorskip("ray")

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors.base import WorkersLost  # noqa: E402

#: A job class in a module this process has in memory only: pickled by reference (the module has a
#: file name), so Ray's worker must import it and cannot, as a node without that module.
GHOST = """
from dataclasses import dataclass


@dataclass
class Job:
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def label(self) -> str:
        return "rj24 ghost job"
"""


def test_a_node_that_cannot_import_the_jobs_module_ends_the_run(monkeypatch, capsys) -> None:
    ghost = types.ModuleType("rj24_ghost")
    ghost.__file__ = "/nonexistent/rj24_ghost.py"
    monkeypatch.setitem(sys.modules, "rj24_ghost", ghost)  # first: @dataclass looks its module up
    exec(compile(GHOST, ghost.__file__, "exec"), ghost.__dict__)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        executor = ray_executor.RayExecutor(progress=False, fn=lambda job: "trained")
        with pytest.raises(WorkersLost, match=r"cannot load this run's jobs \(No module named 'rj24_ghost'\): a module "
                                              r"the jobs use \(rj24_ghost\) is not installed there; install this"):
            list(executor.run([ghost.Job()]))
        assert "Traceback" not in capsys.readouterr().err  # the one line only, not Ray's unpickling frames too
    finally:
        if started:
            ray.shutdown()
