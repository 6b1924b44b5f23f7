"""--job-timeout (issue 20): a job that hangs held the whole experiment until Ctrl-C (a worker stopped
with SIGSTOP, a deadlock in a data loader). With the option, the local pool kills a job's worker once
the job has run past the limit, starts another worker, reports the job failed (not retried) and lets
the other jobs finish: exit code 1, every finished run stored. The value is checked before anything
trains, and `inprocess`, which cannot stop its own job, refuses it.

The hangs are real (a sleep, a SIGSTOP) in real worker processes; nothing here asserts on timings.
"""

from __future__ import annotations

import json
import os
import signal
import time
from functools import partial
from multiprocessing import Pipe
from pathlib import Path

import pytest

from harness.api import experiment_config, keywords
from harness.cli import main
from harness.config import experiment_id
from harness.errors import HarnessError, RunFailed
from harness.executors.local import LocalExecutor
from harness.experiment import Experiment
from harness.jobs import DataSource, Job, JobResult, run_job
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec

#: The limit of the behaviour tests, in seconds: far above a 2-epoch digits run or a pid lookup.
LIMIT = "2"


# job functions the workers import from this module -------------------------------------------
def hang_on_seed(seed: int, job: Job) -> JobResult:
    """Sleep for good in the job of `seed` (a deadlock stands in); train the others."""
    if job.specs[0].seed == seed:
        time.sleep(3600)
    return run_job(job)


def hang_after_epoch_2(marker: str, job: Job) -> JobResult:
    """run_job, whose first attempt hangs once its checkpoint after epoch 2 is written."""
    import harness.jobs as jobs

    real = jobs.train_run

    def hanging(spec, data, requests, checkpoint=None, **kw):  # type: ignore[no-untyped-def]
        def save_then_hang(state: dict) -> None:
            checkpoint(state)
            if state["epoch"] == 2 and not os.path.exists(marker):
                Path(marker).touch()
                time.sleep(3600)

        return real(spec, data, requests, checkpoint=save_then_hang if checkpoint else None, **kw)

    jobs.train_run = hanging
    try:
        return run_job(job)
    finally:
        jobs.train_run = real


def stop_on_seed_0(pid_file: str, job: Job) -> int:
    """In the job of seed 0, stop this worker process (SIGSTOP), as a frozen worker; else its pid."""
    if job.specs[0].seed == 0:
        Path(pid_file).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)
    return os.getpid()


def own_pid(job: Job) -> int:
    return os.getpid()


def _job(seed: int) -> Job:
    return Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), seed),), requests=(), engine="single",
               source=DataSource("digits"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# the option ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), float("-inf"), 1e10, 10**400, True])
def test_a_bad_limit_is_refused_before_anything_trains(value) -> None:
    with pytest.raises(HarnessError, match=r"^job_timeout must be a number of seconds > 0 and at most 1e\+09 \(got "
                                           r".*\); pass e\.g\. job_timeout=3600, or omit it for no limit$"):
        experiment_config(job_timeout=value)


def test_a_limit_that_is_not_a_number_is_refused_by_the_api() -> None:
    with pytest.raises(HarnessError, match="job_timeout must be number or None"):
        experiment_config(job_timeout="abc")


@pytest.mark.parametrize("text", ["0", "-5", "nan", "inf"])
def test_the_cli_refuses_a_bad_limit_naming_the_flag_and_the_fix(text, capsys, tmp_path) -> None:
    assert main(["run", "--job-timeout", text, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --job-timeout must be a number of seconds > 0")
    assert "pass e.g. --job-timeout 3600, or omit it for no limit" in err
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_a_limit_that_is_not_a_number(capsys, tmp_path) -> None:
    assert main(["run", "--job-timeout", "abc", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: argument --job-timeout: invalid float value: 'abc'; see "
                                              "`python -m harness run --help`")


def test_a_limit_is_a_runtime_option_of_local_and_ray(capsys) -> None:
    """Outside the identity (like --workers): a rerun with another limit reuses --out and the store."""
    assert "job_timeout" in keywords()
    cfg = experiment_config(job_timeout=90)
    assert cfg.job_timeout == 90 and experiment_config().job_timeout is None
    assert experiment_id(cfg) == experiment_id(experiment_config())
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--job-timeout SECONDS local, ray: seconds a job" in help_text and "(default: no limit)" in help_text
    assert "again in a rerun, which resumes it from its last checkpoint" in help_text


def test_inprocess_refuses_a_limit_it_cannot_keep() -> None:
    with pytest.raises(HarnessError, match=r"^job_timeout is not an option of executor='inprocess'; it is one of "
                                           r"executor='local' or executor='ray', whose jobs run in worker processes "
                                           r"that can be stopped \(a job in this process cannot stop itself\)$"):
        experiment_config(executor="inprocess", job_timeout=5)


def test_an_executor_built_in_code_checks_its_limit() -> None:
    with pytest.raises(HarnessError, match=r"LocalExecutor\(job_timeout=\.\.\.\) must be a number of seconds"):
        LocalExecutor(job_timeout=0)


# the clock ----------------------------------------------------------------------------------------
def test_a_result_that_arrived_at_the_limit_is_read_not_killed() -> None:
    """A job that finished right at its limit: what its worker sent is kept, the worker is not killed."""
    from harness.executors.local import _overdue, _Worker

    ours, theirs = Pipe()
    worker = _Worker(proc=None, conn=ours, ready=True, job=0, started=time.monotonic() - 10)  # type: ignore[arg-type]
    assert _overdue([worker], 5.0) == [worker]
    assert _overdue([worker], 60.0) == [] and _overdue([worker], None) == []
    theirs.send((0, True, "the result"))
    assert _overdue([worker], 5.0) == []
    idle = _Worker(proc=None, conn=theirs, ready=True, started=0.0)  # type: ignore[arg-type]
    assert _overdue([idle], 5.0) == []  # no job, no clock


def test_the_clock_starts_when_a_ready_worker_gets_the_job() -> None:
    """Starting a worker (seconds of imports) is not the job's time: a limit below it stops nothing."""
    executor = LocalExecutor(workers=2, progress=False, fn=own_pid, job_timeout=1.0)
    try:
        outcomes = list(executor.run([_job(seed) for seed in range(4)]))
    finally:
        executor.close()
    assert all(isinstance(outcome, int) for _, outcome in outcomes) and len(outcomes) == 4


# hung jobs ----------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_a_hung_job_fails_alone_and_the_run_exits_1(tmp_path, monkeypatch, capsys) -> None:
    """Seed 1's job sleeps for good: it is stopped at the limit and reported with the fixes, seed 0's
    run is stored, the outputs are written, and the exit code is 1."""
    real = LocalExecutor.from_config.__func__  # type: ignore[attr-defined]

    def hanging(cls, cfg):  # type: ignore[no-untyped-def]
        executor = real(cls, cfg)
        executor.fn = partial(hang_on_seed, 1)
        return executor

    monkeypatch.setattr(LocalExecutor, "from_config", classmethod(hanging))
    options = dict(proxies="csl", tasks="mislabeled", noise_rates="0.1", seeds=2, epochs=2, device="cpu",
                   bootstrap=0, store=tmp_path / "store", out=tmp_path / "out")
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    code = main(["run", *args, "--no-progress", "--workers", "2", "--job-timeout", LIMIT])
    err = capsys.readouterr().err
    assert code == 1, err
    exp = Experiment(experiment_config(executor="inprocess", **options))
    quick, hung = sorted(exp.plan.runs, key=lambda spec: spec.seed)
    assert (f"error: job {hung.label()}: stopped after 2 s, its --job-timeout, and not retried (a hang would "
            "repeat); its runs are not stored. If it needs longer, raise --job-timeout; rerun to train it again "
            "from its last in-run checkpoint (written every --checkpoint-every s)") in err
    assert f"job {quick.label()}:" not in err
    assert exp.store.get(quick) is not None and exp.store.get(hung) is None
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["job_timeout"] == 2.0
    assert (tmp_path / "out" / "leaderboard.csv").exists()


@pytest.mark.timeout(240)
def test_a_stopped_worker_is_killed_and_replaced(tmp_path) -> None:
    """A worker stopped with SIGSTOP ignores SIGTERM until it is continued: it is killed, its job is
    reported, and a new worker trains the jobs after it."""
    pid_file = tmp_path / "stopped.pid"
    executor = LocalExecutor(workers=1, progress=False, fn=partial(stop_on_seed_0, str(pid_file)),
                             job_timeout=float(LIMIT))
    try:
        outcomes = {job.specs[0].seed: outcome for job, outcome in executor.run([_job(0), _job(1), _job(2)])}
    finally:
        executor.close()
    stopped = int(pid_file.read_text())
    assert isinstance(outcomes[0], RunFailed)
    assert str(outcomes[0]).startswith(f"job {_job(0).label()}: stopped after 2 s, its --job-timeout")
    assert outcomes[1] == outcomes[2] != stopped  # one new worker ran both
    assert not _alive(stopped)


@pytest.mark.timeout(240)
def test_a_ctrl_c_while_a_job_is_stopped_waits_for_its_failure_to_be_recorded(tmp_path, monkeypatch) -> None:
    """The Ctrl-C comes as the hung job's worker is being killed: it is held until the job's failure is
    recorded (for `take_finished`), then stops the run, and no worker is left."""
    from harness.executors import local

    real_stop, started = local._stop, []

    def stop_with_ctrl_c(workers):  # type: ignore[no-untyped-def]
        started.extend(w.proc.pid for w in workers)
        if len(started) == len(workers):  # the first call: `_time_out`'s, for the hung worker
            signal.raise_signal(signal.SIGINT)
        real_stop(workers)

    monkeypatch.setattr(local, "_stop", stop_with_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (xdist ignores it)
    executor = LocalExecutor(workers=1, progress=False, fn=partial(hang_on_seed, 0), job_timeout=float(LIMIT))
    try:
        with pytest.raises(KeyboardInterrupt):
            list(executor.run([_job(0), _job(1)]))
    finally:
        signal.signal(signal.SIGINT, previous)
        executor.close()
    ((job, failure),) = executor.take_finished()
    assert job.specs[0].seed == 0 and isinstance(failure, RunFailed) and "--job-timeout" in str(failure)
    assert started and not any(map(_alive, started)) and not executor._pool


# slow (10-13 s): the stop is tested above, a resume after a kill in test_signals8.py and test_kill_fuzz6.py
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_rerun_resumes_a_stopped_run_from_its_checkpoint(make_config, tmp_path) -> None:
    """What the failure line promises: the stopped run's checkpoint stays, and the rerun resumes it. Its
    fresh worker loads the data and pays torch's one-off setup (seconds here) before it takes the job,
    off the job's clock: the rerun with the same 2 s limit trains."""
    cfg = make_config(executor="local", workers=1, epochs=4, checkpoint_every_s=1e-6, job_timeout=float(LIMIT))
    marker = tmp_path / "hung-once"
    executor = LocalExecutor(workers=1, progress=False, fn=partial(hang_after_epoch_2, str(marker)),
                             job_timeout=float(LIMIT))
    exp = Experiment(cfg, executor=executor)
    (spec,) = exp.plan.runs
    first = exp.run()
    assert marker.exists() and not first.trained
    assert any(f"job {spec.label()}: stopped after 2 s" in failure for failure in first.failures)
    assert exp.store.get(spec) is None and Path(exp.store.checkpoint_path(spec)).is_file()
    second = Experiment(cfg).run()  # the same command again
    assert second.trained == [spec.label()] and second.resumed == {spec.label(): 2} and not second.failures
