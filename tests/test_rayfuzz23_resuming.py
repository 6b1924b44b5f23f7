"""A Ray job's `resuming <run> from its checkpoint at epoch E of N` line reaches the driver.

Found by the Ray kill fuzzing (rayfuzz23): the rerun of a killed `--executor ray` run printed only
"N resumed" on its runs line; the line naming the run and its epoch went to the Ray worker's log
(memprox joins Ray with `log_to_driver=False`), where the local executor's workers show it on the
driver's stderr. It now comes back with the job's result, as the job's warnings do.
"""

from __future__ import annotations

import socket
import sys
import warnings

import pytest

from harness.executors import ray_jobs

LINE = "resuming digits noise=0.1 mlp seed0 from its checkpoint at epoch 7 of 120"


def _resumes(job: object) -> str:
    print("not a resuming line", file=sys.stderr)
    sys.stderr.write("resuming digits noise=0.1 mlp seed0 ")  # one line written in two parts
    print("from its checkpoint at epoch 7 of 120", file=sys.stderr, flush=True)
    warnings.warn("a warning")
    sys.stderr.write("resuming ensemble of 2 (a, b) from its checkpoints at epoch 3 of 40")  # no newline
    return "result"


def test_a_jobs_resuming_lines_come_back_with_its_result(capsys) -> None:
    reported = ray_jobs._call_reported(_resumes, None, socket.gethostname())  # type: ignore[arg-type]
    assert reported == ray_jobs.Reported("result", ("a warning",), socket.gethostname(),
                                         (LINE, "resuming ensemble of 2 (a, b) from its checkpoints at epoch 3 "
                                          "of 40"))
    err = capsys.readouterr().err  # still written where the job wrote them (the worker's log)
    assert err.startswith(f"not a resuming line\n{LINE}\n") and err.endswith("epoch 3 of 40")
    assert sys.stderr is not None and not isinstance(sys.stderr, ray_jobs._ResumesKept)  # put back


def test_a_job_that_prints_nothing_reports_no_resuming_line() -> None:
    reported = ray_jobs._call_reported(lambda job: 1, None, socket.gethostname())  # type: ignore[arg-type]
    assert reported.resumed == ()


def test_the_driver_says_the_resuming_line_before_the_warnings_naming_another_node(capsys) -> None:
    here = ray_jobs.Reported(1, ("w1",), socket.gethostname(), (LINE,))
    there = ray_jobs.Reported(2, (), "gpu-3", (LINE,))
    assert [ray_jobs.said(here), ray_jobs.said(there)] == [1, 2]
    assert capsys.readouterr().err.splitlines() == [LINE, "warning: w1", f"{LINE} (on Ray node gpu-3)"]


def test_a_long_progress_line_is_kept_bounded() -> None:
    kept = ray_jobs._ResumesKept(open("/dev/null", "w"))
    for _ in range(50):
        kept.write("\r" + "x" * 10_000)
    assert len(kept.line) <= ray_jobs.MAX_LINE and kept.kept == []
    kept.write(f"\n{LINE}\r\n")
    assert kept.kept == [LINE]


def test_the_driver_keeps_the_lines_the_resuming_code_prints() -> None:
    """The line `harness.jobs.resume_line` writes reaches the driver: `harness.resuming` holds its
    wording, which the writers use and the driver matches (`is_resuming`)."""
    from io import StringIO
    from types import SimpleNamespace

    from harness.jobs import resume_line

    spec = SimpleNamespace(label=lambda: "digits", recipe=SimpleNamespace(epochs=9), then_on=None)
    kept = ray_jobs._ResumesKept(StringIO())
    kept.write(resume_line(spec, 7) + "\n")  # type: ignore[arg-type]
    assert kept.kept == ["resuming digits from its checkpoint at epoch 7 of 9"]


ray = pytest.importorskip("ray")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_ray_jobs_resuming_line_is_on_the_drivers_stderr(capsys) -> None:
    """End to end on a local Ray (slow: a Ray start; the tests above hold the behaviour)."""
    from dataclasses import dataclass

    from harness.executors.ray import RayExecutor

    @dataclass
    class _Job:
        name: str
        num_cpus: float = 1.0
        num_gpus: float = 0.0

        def label(self) -> str:
            return self.name

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        outcomes = list(RayExecutor(progress=False, fn=_resumes).run([_Job("j")]))
    finally:
        if started:
            ray.shutdown()
    assert [outcome for _, outcome in outcomes] == ["result"]
    assert capsys.readouterr().err.splitlines()[:2] == [LINE, "resuming ensemble of 2 (a, b) from its "
                                                              "checkpoints at epoch 3 of 40"]
