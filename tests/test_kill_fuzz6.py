"""Kills and resumes, from the randomized kill fuzzing of December 2026: what a resumed run says,
and what the fuzzing found wrong with interrupted experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.experiment import Experiment
from harness.jobs import Job, run_job
from harness.training import train_run


def _checkpointed_at(exp: Experiment, epoch: int) -> tuple[Job, list]:
    """The experiment's one run, interrupted right after its checkpoint of `epoch`, and its job."""
    (spec,) = exp.plan.runs
    requests = sorted(exp.plan.runs[spec], key=lambda r: r.key)
    keys = [r.key for r in requests]
    exp.store.create()

    def stop_after(state: dict) -> None:
        exp.store.save_checkpoint(spec, state, keys)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(spec, exp.prepared(spec.data), requests, checkpoint=stop_after, checkpoint_every_s=0,
                  progress=False)
    job = Job(specs=(spec,), requests=tuple(requests), engine="single", source=exp.source,
              checkpoint_root=str(exp.store.root), checkpoint_every_s=1e9)
    return job, requests


def test_a_resumed_run_says_which_run_resumed_from_which_epoch(make_config, capfd) -> None:
    """Resuming used to be silent until the run was stored (then only a count on the runs line):
    a user who killed a long run could not tell whether the rerun went on or started over."""
    exp = Experiment(make_config(epochs=4))
    job, _ = _checkpointed_at(exp, 2)
    capfd.readouterr()
    result = run_job(job)
    (spec,) = job.specs
    assert result.resumed == {spec: 2}
    err = capfd.readouterr().err.splitlines()
    assert err == [f"resuming {spec.label()} from its checkpoint at epoch 2 of 4"]


def test_a_run_without_a_checkpoint_says_nothing(make_config, capfd) -> None:
    exp = Experiment(make_config(epochs=2))
    (spec,) = exp.plan.runs
    exp.store.create()
    job = Job(specs=(spec,), requests=tuple(sorted(exp.plan.runs[spec], key=lambda r: r.key)), engine="single",
              source=exp.source, checkpoint_root=str(exp.store.root), checkpoint_every_s=1e9)
    capfd.readouterr()
    assert run_job(job).resumed == {}
    assert "resuming" not in capfd.readouterr().err


_SPY = """
import os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a script's background job (`memprox run ... &`)

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("ignored at torch import:", signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
            os._exit(0)  # what follows is not this test's
        return None

sys.meta_path.insert(0, Spy())
sys.argv = ["harness", "list"]
runpy.run_module("harness", run_name="__main__")
"""


def test_a_background_job_takes_ctrl_c_back_before_the_slow_imports() -> None:
    """Found by the kill fuzzing: `python -m harness run ... &` from a script starts with SIGINT
    ignored and takes it back in `cli.main`, i.e. after importing torch (2 s idle, 20 s on a loaded
    box); a `kill -INT` in that window was lost and the run went on to exit 0."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SPY], cwd=Path(__file__).parents[1], capture_output=True,
                         text=True, timeout=60)
    assert "ignored at torch import: False" in out.stdout, out.stdout + out.stderr


def test_workers_killed_while_starting_are_not_sent_to_an_error_above(tmp_path: Path, monkeypatch) -> None:
    """Found by the kill fuzzing: two workers killed (SIGKILL from outside) while importing torch
    ended the run with "...before they are ready (killed by SIGKILL; see the error above)", and
    there was no error above: the message now says where such a kill comes from, and to rerun."""
    from harness.executors import local
    from harness.executors.base import WorkersLost
    from harness.jobs import DataSource, Job
    from harness.recipe import Recipe
    from harness.runspec import DataSpec, RunSpec

    killer = tmp_path / "python-killed-at-start"
    killer.write_text("#!/bin/sh\nkill -9 $$\n")
    killer.chmod(0o755)
    monkeypatch.setattr(local.sys, "executable", str(killer))
    job = Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), 0),), requests=(), engine="single",
              source=DataSource("digits"))
    executor = local.LocalExecutor(workers=1, progress=False)
    with pytest.raises(WorkersLost) as caught:
        list(executor.run([job]))
    executor.close()
    message = str(caught.value)
    assert "killed by SIGKILL: a signal from outside, or the kernel's out-of-memory killer" in message
    assert "see the error above" not in message and "rerun to resume" in message
