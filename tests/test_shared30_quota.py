"""A cgroup CPU quota as the local pool, its warning and inprocess's see it (shared30): fake cgroup files put in
place through `harness.cgroups.CGROUP_ROOT` / `SELF_CGROUP`. `usable_cpus` bound those as defaults when it was
imported, so pointing them elsewhere changed nothing: on an 8-CPU affinity with a 1-CPU quota the pool still
planned 8 workers and `--workers 2` was not warned about. The sizes are counted here, never timed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from harness import cgroups
from harness.executors import cpus, make_executor
from harness.executors.local import LocalExecutor
from harness.jobs import DataSource, Job
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec


def _job() -> Job:
    return Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), 0),), requests=(), engine="single",
               source=DataSource("digits"))


@pytest.fixture
def quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An 8-CPU affinity and a cgroup whose cpu.max the test writes (v2: `0::/job`, a parent `/` and the job)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    root = tmp_path / "cgroup"
    (root / "job").mkdir(parents=True)
    (tmp_path / "self").write_text("0::/job\n")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    monkeypatch.setattr(cgroups, "SELF_CGROUP", tmp_path / "self")

    def write(text: str, where: str = "job") -> None:
        (root / where / "cpu.max").write_text(text)
    return write


@pytest.mark.parametrize("text, usable", [("100000 100000\n", 1), ("150000 100000\n", 1), ("250000 100000\n", 2),
                                          ("max 100000\n", 8), ("garbage\n", 8)])
def test_the_pool_follows_the_cgroup_files_in_place(quota, make_config, text, usable) -> None:
    quota(text)
    assert cpus.usable_cpus() == usable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default never oversubscribes: no warning
        executor = make_executor(make_config(executor="local"))
    assert isinstance(executor, LocalExecutor)
    assert executor._slots([_job()]) == usable and executor.threads == 1


def test_a_parents_quota_binds_the_pool_and_its_warning(quota, make_config) -> None:
    quota("max 100000\n")
    quota("100000 100000\n", where="")  # the parent's 1 CPU binds the job's "max"
    with pytest.warns(UserWarning, match=r"^2 worker\(s\) x 1 torch thread\(s\) = 2 threads on 1 usable CPU\(s\)"):
        make_executor(make_config(executor="local", workers=2))
    with pytest.warns(UserWarning, match=r"^1 worker\(s\) x 2 torch thread\(s\) = 2 threads on 1 usable CPU\(s\)"):
        make_executor(make_config(executor="inprocess", threads=2))
