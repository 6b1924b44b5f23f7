"""The local executor's pool of worker processes (issue 17): the same bits for any number of
workers, never more torch threads than the CPUs this process may use (affinity and cgroup quota),
a worker killed mid-job retried once (a job whose worker dies twice fails alone), Ctrl-C exits 130
leaving no worker behind, and a driver killed with kill -9 takes its workers with it.

Workers are found by an environment mark the test gives the driver (they inherit it): the tests
never look at, or kill, processes they did not start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from _processes import live_with_env, wait_until

from harness.errors import HarnessError
from harness.executors import cpus, executor_names, make_executor
from harness.executors import local as local_executor
from harness.executors.base import Executor
from harness.executors.inprocess import InProcessExecutor
from harness.executors.local import LocalExecutor, default_workers
from harness.experiment import Experiment
from harness.jobs import DataSource, Job, JobResult, run_job
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec

REPO = Path(__file__).resolve().parent.parent
MARK = "MEMPROX_TEST_POOL"
#: Long enough that a job is still training when the test acts on it.
LONG_RUN = ["--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--epochs", "2000",
            "--device", "cpu", "--no-progress", "--checkpoint-every", "0.5"]


# job functions the workers import from this module -------------------------------------------
def probe(job: Job) -> tuple[int, int, int, str]:
    """What a worker runs with: its pid, torch intra- and inter-op threads, OMP_NUM_THREADS."""
    return os.getpid(), torch.get_num_threads(), torch.get_num_interop_threads(), os.environ["OMP_NUM_THREADS"]


def fail_on_seed_1(job: Job) -> tuple[int, int, int, str]:
    if job.specs[0].seed == 1:
        raise ValueError("bad job")
    return probe(job)


def kill_first_attempt(victim: str, marker: str, job: Job) -> JobResult:
    """Kill this worker process the first time it gets the victim's job; run it on the retry."""
    if job.specs[0].digest() == victim and not os.path.exists(marker):
        Path(marker).write_text("killed once")
        os._exit(1)
    return run_job(job)


def kill_always(victim: str, job: Job) -> JobResult:
    if any(spec.digest() == victim for spec in job.specs):
        os.kill(os.getpid(), signal.SIGKILL)
    return run_job(job)


def resumed_from(log: str, job: Job) -> JobResult:
    """run_job, writing to `log` the epoch each run of the job resumes from (0: from scratch)."""
    import harness.jobs as jobs

    real = jobs.train_run

    def spy(spec, data, requests, **kw):  # type: ignore[no-untyped-def]
        state = kw.get("resume_state")
        with open(log, "a") as f:
            f.write(f"{state['epoch'] if state else 0}\n")
        return real(spec, data, requests, **kw)

    jobs.train_run = spy
    try:
        return run_job(job)
    finally:
        jobs.train_run = real


def _job(seed: int) -> Job:
    return Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), seed),), requests=(), engine="single",
               source=DataSource("digits"))


# helpers ----------------------------------------------------------------------------------------
def marked(mark: str) -> list[int]:
    return live_with_env(f"{MARK}={mark}")


def workers_of(mark: str) -> list[int]:
    out = []
    for pid in marked(mark):
        try:
            if b"harness.executors.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


def start_cli(tmp: Path, args: list[str], mark: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "harness", "run", *args, "--out", str(tmp / "out"), "--store", str(tmp / "store")]
    env = {**os.environ, MARK: mark, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def training(tmp: Path) -> bool:
    """A worker has trained long enough to checkpoint (`--checkpoint-every 0.5`)."""
    return any((tmp / "store" / "partial").glob("*")) if (tmp / "store" / "partial").is_dir() else False


def _files(out: Path) -> dict[str, bytes]:
    names = ["leaderboard.csv", "raw.csv", *[f"scores/{p.name}" for p in (out / "scores").iterdir()]]
    return {n: (out / n).read_bytes() for n in names}


@pytest.fixture
def mark() -> str:
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):  # whatever a failed test left
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# usable CPUs ------------------------------------------------------------------------------------
def _cgroup(tmp_path: Path, files: dict[str, str], self_cgroup: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "self").write_text(self_cgroup)
    return root, tmp_path / "self"


@pytest.mark.parametrize("files, self_cgroup, expected", [
    ({}, "0::/\n", 8),  # no limit anywhere: the affinity
    ({"cpu.max": "max 100000\n"}, "0::/\n", 8),  # v2, unlimited
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 1),  # v2, 1.5 CPUs: a second thread would be throttled
    ({"cpu.max": "300000 100000\n"}, "0::/\n", 3),
    ({"user.slice/cpu.max": "200000 100000\n", "user.slice/job/cpu.max": "max 100000\n"},
     "0::/user.slice/job\n", 2),  # v2: a parent's quota applies to its children
    ({"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n", 3),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "2:cpu:/\n", 8),  # v1, unlimited
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "2:cpu:/\n", 1),  # half a CPU: 1
    ({"cpu.max": "garbage\n"}, "0::/\n", 8),  # unreadable: no limit known
])
def test_usable_cpus_reads_affinity_and_the_cgroup_quota(tmp_path, monkeypatch, files, self_cgroup, expected) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    root, own = _cgroup(tmp_path, files, self_cgroup)
    assert cpus.usable_cpus(root, own) == expected


def test_usable_cpus_follows_the_affinity_mask(tmp_path, monkeypatch) -> None:
    root, own = _cgroup(tmp_path, {"cpu.max": "400000 100000\n"}, "0::/\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine's count is not what this process may use
    assert cpus.usable_cpus(root, own) == 1


def test_the_default_never_starts_more_torch_threads_than_usable_cpus(make_config, monkeypatch) -> None:
    # this machine: the pool's default fits the CPUs this process may use
    executor = make_executor(make_config(executor="local"))
    assert executor._slots([_job(0)]) * executor.threads <= cpus.usable_cpus()
    for usable in (1, 2, 3, 16):
        monkeypatch.setattr(local_executor, "usable_cpus", lambda usable=usable: usable)
        executor = make_executor(make_config(executor="local"))
        assert isinstance(executor, LocalExecutor) and executor.threads == 1
        slots = executor._slots([_job(0)])
        assert slots == usable and slots * executor.threads <= usable
        executor.close()
    assert default_workers(2, cpus=5) == 2 and default_workers(4, cpus=2) == 1
    assert default_workers(1, gpus_per_job=0.25, cpus=16) == 4  # all on one GPU: its share bounds them too


def test_more_threads_than_cpus_is_allowed_with_one_warning(make_config, monkeypatch) -> None:
    monkeypatch.setattr(local_executor, "usable_cpus", lambda: 2)
    with pytest.warns(UserWarning, match="2 worker.*x 2 torch thread.*4 threads on 2 usable CPU"):
        make_executor(make_config(executor="local", workers=2, threads=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_executor(make_config(executor="local"))  # the default: no warning
        make_executor(make_config(executor="local", threads=2))  # one worker of 2 threads fits


def test_workers_run_one_thread_each_persist_and_report_exceptions(mark, monkeypatch) -> None:
    monkeypatch.setenv(MARK, mark)
    executor = LocalExecutor(workers=2, progress=False, fn=fail_on_seed_1)
    try:
        first = list(executor.run([_job(s) for s in (0, 1, 2, 3)]))
        assert len(first) == 4
        errors = [outcome for job, outcome in first if job.specs[0].seed == 1]
        assert len(errors) == 1 and isinstance(errors[0], ValueError)  # reported, not retried, not fatal
        probes = [outcome for job, outcome in first if job.specs[0].seed != 1]
        assert {(t, i, omp) for _, t, i, omp in probes} == {(1, 1, "1")}  # 1 torch thread, 1 inter-op, OMP
        pool = set(workers_of(mark))
        assert {pid for pid, *_ in probes} <= pool and len(pool) == 2
        second = list(executor.run([_job(4), _job(5)]))  # the same workers (their caches stay warm)
        assert {outcome[0] for _, outcome in second} <= pool and set(workers_of(mark)) == pool
    finally:
        executor.close()
    assert workers_of(mark) == []


# the same bits for any number of workers --------------------------------------------------------
def test_one_or_two_workers_and_in_process_give_identical_outputs(make_config, tmp_path) -> None:
    """Default settings (no --threads): each worker trains with 1 torch thread, as Ray's do."""
    outputs = {}
    for name, kw in {"w1": {"executor": "local", "workers": 1}, "w2": {"executor": "local", "workers": 2},
                     "inprocess": {"executor": "inprocess"}}.items():
        cfg = make_config(epochs=2, proxies="csl,final_loss,confident_learning", seeds=(0, 1),
                          out=tmp_path / name / "out", store=tmp_path / name / "store", **kw)
        exp = Experiment(cfg)
        result = exp.run()
        assert not result.failures and len(result.trained) == 8
        assert {exp.store.get(s).manifest.threads for s in exp.plan.runs} == {1}
        outputs[name] = _files(cfg.out)
    assert outputs["w1"] == outputs["w2"] == outputs["inprocess"]


# a worker that dies -------------------------------------------------------------------------------
def test_a_killed_worker_is_retried_and_the_experiment_completes(make_config, tmp_path) -> None:
    cfg = make_config(executor="local", workers=2, epochs=2, proxies="csl,final_loss,confident_learning")
    base = Experiment(cfg).plan.settings[0][2]
    marker = tmp_path / "killed-once"
    executor = LocalExecutor(workers=2, progress=False, fn=partial(kill_first_attempt, base.digest(), str(marker)))
    exp = Experiment(cfg, executor=executor)
    result = exp.run()
    assert marker.exists()  # the worker really died
    assert not result.failures and len(result.trained) == 4 and exp.store.get(base) is not None


def test_a_worker_that_dies_twice_fails_its_job_alone(make_config, tmp_path) -> None:
    cfg = make_config(executor="local", workers=2, epochs=2, proxies="csl,final_loss,confident_learning")
    base = Experiment(cfg).plan.settings[0][2]
    executor = LocalExecutor(workers=2, progress=False, fn=partial(kill_always, base.digest()))
    exp = Experiment(cfg, executor=executor)
    result = exp.run()
    assert any("worker died 2 times" in f and "SIGKILL" in f and base.label() in f for f in result.failures)
    assert len(result.trained) == 3 and base.label() not in result.trained  # the folds finished
    assert exp.store.get(base) is None and (cfg.out / "leaderboard.csv").exists()


def test_a_pool_worker_resumes_an_interrupted_run_from_its_checkpoint(make_config, tmp_path) -> None:
    """In-run checkpoints keep working with the pool: the worker finds the run's checkpoint in the
    shared store and trains only the epochs after it, to the same result as an uninterrupted run."""
    from harness.training import train_run

    cfg = make_config(executor="local", workers=1, epochs=4, proxies="csl,forgetting", checkpoint_every_s=1e-6)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    requests = sorted(exp.plan.runs[spec], key=lambda r: r.key)
    keys = [r.key for r in requests]

    def stop_after_2(state: dict) -> None:
        exp.store.save_checkpoint(spec, state, keys)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(spec, exp.prepared(spec.data), requests, checkpoint=stop_after_2, checkpoint_every_s=0,
                  progress=False)
    log = tmp_path / "resumed.log"
    executor = LocalExecutor(workers=1, progress=False, fn=partial(resumed_from, str(log)))
    result = Experiment(cfg, executor=executor).run()
    assert result.trained == [spec.label()] and log.read_text().split() == ["2"]
    assert result.resumed == {spec.label(): 2}  # reported (summary.json, the CLI's runs line)
    summary = json.loads((Path(cfg.out) / "summary.json").read_text())
    assert summary["resumed"] == {spec.label(): 2}
    stored = exp.store.get(spec)
    full = train_run(spec, exp.prepared(spec.data), requests, progress=False)
    assert [h["epoch"] for h in stored.manifest.history] == [1, 2, 3, 4]
    for key in keys:
        for name, arr in full.arrays[key].items():
            np.testing.assert_allclose(stored.arrays(key)[name], arr, rtol=1e-5, atol=1e-6, err_msg=f"{key}.{name}")


# stopping -----------------------------------------------------------------------------------------
@pytest.fixture
def short_tmp():
    path = Path(tempfile.mkdtemp(prefix="mpx", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_ctrl_c_with_the_pool_exits_130_and_leaves_no_worker(short_tmp, mark) -> None:
    proc = start_cli(short_tmp, [*LONG_RUN, "--seeds", "2", "--workers", "2"], mark)
    try:
        assert wait_until(lambda: training(short_tmp) and len(workers_of(mark)) == 2, 120, proc), "no job started"
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole foreground process group
        _, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]
    assert not (short_tmp / "out" / "leaderboard.csv").exists()
    assert wait_until(lambda: workers_of(mark) == [], 5), workers_of(mark)


def test_kill_9_of_the_driver_takes_its_workers_along(short_tmp, mark) -> None:
    proc = start_cli(short_tmp, [*LONG_RUN, "--seeds", "2", "--workers", "2"], mark)
    try:
        assert wait_until(lambda: training(short_tmp) and len(workers_of(mark)) == 2, 120, proc), "no job started"
        proc.kill()
        proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until(lambda: workers_of(mark) == [], 5), workers_of(mark)


# executors as plugins -------------------------------------------------------------------------------
def test_the_experiment_asks_the_executor_how_jobs_see_the_store(make_config) -> None:
    class NoStore(InProcessExecutor):
        shares_store = False

    exp = Experiment(make_config(epochs=1), executor=NoStore(progress=False))
    (job,) = exp.jobs(exp.pending()[1])
    assert job.checkpoint_root is None and job.threads == 1 and job.device == "cpu"
    exp.executor = LocalExecutor()
    (job,) = exp.jobs(exp.pending()[1])
    assert job.checkpoint_root == str(exp.store.root) and job.progress is False  # workers share the store


def test_an_executor_plugin_registers_through_an_entry_point(make_config, monkeypatch) -> None:
    import importlib.metadata
    import types

    import harness.executors as executors

    class DaskLike(Executor):
        name = "dasklike"
        description = "a test plugin"

        @classmethod
        def from_config(cls, cfg):
            return cls()

        def run(self, jobs):
            yield from ((job, run_job(job)) for job in jobs)

    module = types.ModuleType("fake_executor_plugin")
    module.DaskLike = DaskLike
    monkeypatch.setitem(sys.modules, "fake_executor_plugin", module)
    ep = importlib.metadata.EntryPoint("dasklike", "fake_executor_plugin:DaskLike", executors.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points  # other libraries (narwhals, via scikit-learn) look up their own groups
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    for builtin in ("local", "inprocess"):  # imported now: imported into the stand-in, they were lost to later tests
        executors.executor_class(builtin)
    monkeypatch.setattr(executors, "EXECUTORS", type(executors.EXECUTORS)("executor"))
    assert "dasklike" in executor_names()
    cfg = make_config(executor="dasklike", epochs=1)
    assert isinstance(Experiment(cfg).executor, DaskLike)
    with pytest.raises(HarnessError, match="--workers is not an option of --executor dasklike"):
        make_config(executor="dasklike", workers=2).validate()
    with pytest.raises(HarnessError, match="unknown executor 'nope'.*dasklike"):
        make_config(executor="nope").validate()


def test_workers_get_the_package_folder_on_pythonpath_only_outside_site_packages(monkeypatch) -> None:
    """A wheel install's site-packages on PYTHONPATH went before the standard library in workers:
    an old backport there (`pathlib` 1.0.1) replaced the real module, and every worker died."""
    import os
    import site

    from harness.executors.local import worker_pythonpath

    monkeypatch.setenv("PYTHONPATH", "/x/users")
    assert worker_pythonpath("/src/checkout").split(os.pathsep) == ["/src/checkout", "/x/users"]
    assert worker_pythonpath(site.getsitepackages()[0]).split(os.pathsep) == ["/x/users"]
    monkeypatch.delenv("PYTHONPATH")
    assert worker_pythonpath(site.getsitepackages()[0]) == ""
