"""The start line says where the cost task measures (alone it trains clean base runs of its own, which a
store holding only another task's runs lacks: a run trained where the user expected none), and the
preset line counts one epoch in the singular."""

from __future__ import annotations

from harness.cli import main


def _start(tmp_path, capsys, *tasks: str) -> str:
    noise = ["--noise-rates", "0.1"] if "mislabeled" in tasks else []
    code = main(["run", "--proxies", "csl", "--tasks", ",".join(tasks), *noise, "--seeds", "1", "--epochs", "1",
                 "--subset", "200", "--executor", "inprocess", "--no-progress",
                 "--out", str(tmp_path / "-".join(tasks)), "--store", str(tmp_path / "store")])
    assert code == 0
    return capsys.readouterr().err


def test_the_start_line_names_the_runs_cost_measures_on(tmp_path, capsys) -> None:
    alone = _start(tmp_path, capsys, "cost")
    assert alone.splitlines()[0].endswith(" · preset quick · cost on the clean runs")
    assert "mlp, 1 epoch sgd lr" in alone
    beside = _start(tmp_path, capsys, "mislabeled", "cost")
    assert beside.splitlines()[0].endswith(" · cost on the noise=0.1 runs")
    assert "cost on" not in _start(tmp_path, capsys, "mislabeled").splitlines()[0]


def _stored_manifests(store) -> list:
    return sorted(store.glob("runs/*/manifest.json"))


def _set_compiled(path, value) -> None:
    """Rewrite a stored manifest as a run trained compiled (or one written before the field) would be."""
    import json

    from harness.manifest import DIGEST_FIELD, manifest_digest

    raw = json.loads(path.read_text())
    raw.pop(DIGEST_FIELD)
    if value is None:
        raw.pop("compiled")
        raw["machine"].pop("compiled", None)
    else:  # the machine record says it too since 5 December 2026 (a run resumed the other way says both)
        raw["compiled"] = raw["machine"]["compiled"] = value
    path.write_text(json.dumps({**raw, DIGEST_FIELD: manifest_digest(raw)}))


def test_a_run_records_whether_it_trained_compiled_and_reusing_the_other_kind_warns(tmp_path) -> None:
    """--compile is not in a run's address and its numbers agree with eager ones only to rounding: runs
    compiled in one step were reused by an eager step without a word."""
    import json
    import warnings

    import pytest

    from harness.api import run_experiment

    opts = dict(proxies="csl", tasks="mislabeled", noise_rates=[0.1], seeds=1, epochs=1, subset=200,
                executor="inprocess", progress=False, store=str(tmp_path / "store"), out=None)
    run_experiment(**opts)
    (path,) = _stored_manifests(tmp_path / "store")
    assert json.loads(path.read_text())["compiled"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_experiment(**opts)  # the same kind: nothing said
    _set_compiled(path, True)
    with pytest.warns(UserWarning, match=r"1 run\(s\) read from the store were trained with compile=True, this "
                                         r"experiment trains without it:.*pass compile=True to match"):
        run_experiment(**{**opts, "out": str(tmp_path / "out")})
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [run["compiled"] for run in summary["runs"]] == [True]
    _set_compiled(path, None)  # written before the field: unknown, not counted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_experiment(**opts)
    assert result is not None


def prints(job) -> str:
    """Job code that prints, as a plugin recorder or dataset loader may."""
    import os

    print("printed by a job", flush=True)
    os.write(1, b"written to fd 1 by a job\n")
    return "done"


def test_what_job_code_prints_in_a_worker_goes_to_stderr_not_into_the_report(capfd) -> None:
    """stdout holds only the leaderboard and its path (docs/reading-results.md); a worker's stdout was
    the driver's, so a plugin's prints landed in the middle of the report."""
    from test_job_timeout20 import _job

    from harness.executors.local import LocalExecutor

    executor = LocalExecutor(workers=1, progress=False, fn=prints)  # type: ignore[arg-type]
    try:
        assert [outcome for _, outcome in executor.run([_job(0)])] == ["done"]
    finally:
        executor.close()
    out, err = capfd.readouterr()
    assert "by a job" not in out
    assert "printed by a job\n" in err and "written to fd 1 by a job\n" in err


def test_an_exception_a_job_raised_names_the_job() -> None:
    """A plugin recorder's or dataset loader's exception inside a job printed `error: boom`, not which
    of the experiment's runs it broke; the job's own failures (RunFailed) already name their run."""
    from test_job_timeout20 import _job

    from harness.errors import RunFailed
    from harness.runner import failure_line

    job = _job(3)
    assert failure_line(job, ValueError("boom")) == f"job {job.label()}: boom"
    assert failure_line(job, KeyError()) == f"job {job.label()}: KeyError"
    assert failure_line(job, RunFailed("run x: loss became nan")) == "run x: loss became nan"
    said = f"job {job.label()}: its worker died 2 times"
    assert failure_line(job, RuntimeError(said)) == said


def test_a_killed_processs_write_probe_on_nfs_is_removed(tmp_path, monkeypatch) -> None:
    """The store's write probes (`.write-test-<pid>-...`) are cleaned like the Ray probe: an exclusive
    flock, which NFS grants only on a file open for writing; a read-only open left them for good."""
    import errno
    import os
    import subprocess
    import sys
    import types

    import harness.io as io

    real = io.fcntl

    def flock(fd: int, op: int) -> None:  # as an NFS client: LOCK_EX needs the file open for writing
        if op & real.LOCK_EX and real.fcntl(fd, real.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        real.flock(fd, op)

    monkeypatch.setattr("harness.kill_leftovers.fcntl", types.SimpleNamespace(
        flock=flock, LOCK_EX=real.LOCK_EX, LOCK_NB=real.LOCK_NB, LOCK_SH=real.LOCK_SH))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    name = f".write-test-{dead}-abcd1234"
    (tmp_path / name).touch()
    (tmp_path / "mine.txt").touch()
    assert io.remove_dead_probes(tmp_path) == [name]
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]
