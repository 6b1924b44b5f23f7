"""The Ray executor on a local Ray with 2 CPUs: the same outputs as the local pool at both
executors' defaults, a worker that dies is retried once (and a job whose worker dies twice fails
alone), and `--executor ray` without Ray installed is a clear exit-2 error."""

from __future__ import annotations

import os
import socket
import sys
from functools import partial
from pathlib import Path

import pytest

import harness.executors.ray as ray_executor
from harness.cli import main
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.jobs import Job, JobResult, run_job

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the job wrappers below live in this test module, which Ray's workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if started:
        ray.shutdown()


def _config(make_config, tmp_path: Path, name: str, **kw):
    return make_config(epochs=2, proxies="csl,final_loss,confident_learning",
                       out=tmp_path / name / "out", store=tmp_path / name / "store", **kw)


def _files(out: Path) -> dict[str, bytes]:
    names = ["leaderboard.csv", "raw.csv", *[f"scores/{p.name}" for p in (out / "scores").iterdir()]]
    return {n: (out / n).read_bytes() for n in names}


def test_ray_and_local_give_identical_outputs_at_their_defaults(make_config, tmp_path, local_ray) -> None:
    """No --threads: before issue 17 the local executor trained with torch's thread count and Ray
    with 1, and the scores differed at rounding level."""
    local = Experiment(_config(make_config, tmp_path, "local", executor="local", seeds=(0, 1))).run()
    ray_cfg = _config(make_config, tmp_path, "ray", executor="ray", workers=2, seeds=(0, 1))
    exp = Experiment(ray_cfg)
    assert not exp.executor.shares_store or exp.executor.address is None
    remote = exp.run()
    assert not local.failures and not remote.failures
    assert sorted(local.trained) == sorted(remote.trained) and len(remote.trained) == 8  # (base + 3 folds) x 2
    assert _files(tmp_path / "local" / "out") == _files(tmp_path / "ray" / "out")  # bit-identical on CPU
    engines = {r.manifest.engine for r in (exp.store.get(s) for s in exp.plan.runs)}
    assert engines == {"single", "ensemble"}  # the folds trained as ensembles, the base run alone


def kill_first_attempt(victim: str, marker: str, job: Job) -> JobResult:
    """Kill this worker process the first time it gets the victim's job; run it on the retry."""
    if job.specs[0].digest() == victim and not os.path.exists(marker):
        Path(marker).write_text("killed once")
        os._exit(1)
    return run_job(job)


def kill_always(victim: str, job: Job) -> JobResult:
    if any(spec.digest() == victim for spec in job.specs):
        os._exit(1)
    return run_job(job)


def test_a_killed_worker_is_retried_and_the_experiment_completes(make_config, tmp_path, local_ray) -> None:
    cfg = _config(make_config, tmp_path, "killed", executor="ray", workers=2)
    base = Experiment(cfg).plan.settings[0][2]
    marker = tmp_path / "killed-once"
    executor = ray_executor.RayExecutor(workers=2, progress=False, fn=partial(kill_first_attempt, base.digest(),
                                                                                str(marker)))
    exp = Experiment(cfg, executor=executor)
    result = exp.run()
    assert marker.exists()  # the worker really died
    assert not result.failures and len(result.trained) == 4 and exp.store.get(base) is not None


def test_a_worker_that_dies_twice_fails_its_job_alone(make_config, tmp_path, local_ray) -> None:
    cfg = _config(make_config, tmp_path, "dead", executor="ray", workers=2)
    probe = Experiment(cfg)
    base = probe.plan.settings[0][2]
    executor = ray_executor.RayExecutor(workers=2, progress=False, fn=partial(kill_always, base.digest()))
    exp = Experiment(cfg, executor=executor)
    result = exp.run()
    assert any("worker died 2 times" in f and base.label() in f for f in result.failures)
    assert len(result.trained) == 3 and base.label() not in result.trained  # the folds finished
    assert exp.store.get(base) is None and (cfg.out / "leaderboard.csv").exists()


def test_executor_ray_without_ray_is_exit_2(make_config, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(ray_executor, "ray", None)
    with pytest.raises(HarnessError, match=r"\[ray\]"):
        Experiment(make_config(executor="ray"))
    code = main(["run", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--epochs", "1",
                 "--device", "cpu", "--executor", "ray", "--out", str(tmp_path / "o"),
                 "--store", str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_job_that_raises_is_reported_by_its_own_message(capsys) -> None:
    """Before: the failure line was Ray's wrapper text, the worker's whole traceback with terminal
    colour codes, where the local executor reports the exception's message."""
    from ray.exceptions import RayTaskError

    trace = "\x1b[36mray::digits seed0()\x1b[39m\nTraceback (most recent call last):\nHarnessError: unknown dataset 'x'"
    error = RayTaskError("_call", trace, HarnessError("unknown dataset 'x'"))
    outcome = ray_executor._job_error(error)
    assert type(outcome) is HarnessError and str(outcome) == "unknown dataset 'x'"
    err = capsys.readouterr().err
    assert "Traceback" in err and "\x1b[" not in err


@pytest.mark.parametrize("scheme, flag", [("", "--port"), ("ray://", "--ray-client-server-port")])
def test_a_closed_port_names_the_flag_that_opens_it(scheme, flag) -> None:
    """Before: a ray:// (Ray Client) address was told `ray start --head --port=PORT`, the GCS port."""
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HarnessError, match=rf"`ray start --head {flag}={port}`"):
        ray_executor.check_reachable(f"{scheme}127.0.0.1:{port}")
