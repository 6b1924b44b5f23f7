"""The executor sketches of docs/executors.md, run as a user would copy them (audit 17).

The Dask and the Slurm sketch were never run; run, they mixed jobs' random draws in threaded Dask
workers, retried every exception, and left submitted Slurm jobs running when sbatch refused one.
These tests take each sketch's code from the page itself, so the page cannot rot again: the Dask one
on an in-process Dask cluster, the Slurm one (through submitit) against a fake sbatch, srun, sacct
and scancel that run each Slurm job as a local background process. Each is skipped where its
package (dask.distributed, submitit) is not installed: both are in the dev extra, so the suite runs them.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import executors, run_experiment
from harness.errors import HarnessError
from harness.executors.base import WorkersLost
from harness.model_registry import MODELS
from harness.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "executors.md"
#: A small experiment: one noisy setting, two epochs, no bootstrap.
SMALL: dict[str, Any] = dict(proxies="final_loss", tasks="mislabeled", noise_rates=[0.1], epochs=2, bootstrap=0,
                             progress=False, out=None)


def sketch(cls: str) -> str:
    """The ```python block of docs/executors.md that defines `class cls`."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
              if f"class {cls}(" in b]
    assert len(blocks) == 1, f"docs/executors.md should hold one sketch of {cls}"
    return blocks[0]


@pytest.fixture
def registered(monkeypatch) -> Any:
    """Run a sketch's code (it registers its executor) into a copy of the executor registry. The
    built-ins the tests use are imported first: one imported while the copy is in place would
    register into the copy only, and be unknown to the tests after this one."""
    for name in ("inprocess", "local"):
        executors.executor_class(name)
    copy: Registry = Registry("executor")
    for name, cls in executors.EXECUTORS.items():
        copy.register(name, cls)
    monkeypatch.setattr(executors, "EXECUTORS", copy)

    def load(cls: str) -> None:
        exec(compile(sketch(cls), f"docs/executors.md:{cls}", "exec"), {"__name__": f"sketch_{cls.lower()}"})

    return load


# -- Dask ---------------------------------------------------------------------------------------


@pytest.fixture
def dask_cluster(monkeypatch, request) -> Any:
    """An in-process Dask cluster (`threads` per worker) at $DASK_SCHEDULER_ADDRESS."""
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=request.param, processes=False,
                                       dashboard_address=None)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    yield cluster
    cluster.close()


@pytest.mark.parametrize("dask_cluster", [1], indirect=True)
def test_the_dask_sketch_gives_the_serial_scores(dask_cluster, registered, tmp_path) -> None:
    registered("DaskExecutor")
    serial = run_experiment(**SMALL, seeds=2, executor="inprocess", store=str(tmp_path / "serial"))
    dask = run_experiment(**SMALL, seeds=2, executor="dask", store=str(tmp_path / "dask"))
    assert sorted(dask.trained) == sorted(serial.trained) and len(dask.trained) == 2
    pd.testing.assert_frame_equal(dask.leaderboard, serial.leaderboard)


@pytest.mark.parametrize("dask_cluster", [2], indirect=True)
def test_the_dask_sketch_refuses_threaded_workers_before_it_makes_the_store(dask_cluster, registered,
                                                                            tmp_path) -> None:
    """Two jobs in threads of one worker seed torch's one global generator: the scores differed."""
    registered("DaskExecutor")
    with pytest.raises(HarnessError, match="--nthreads 1"):
        run_experiment(**SMALL, seeds=1, executor="dask", store=str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


# -- Slurm --------------------------------------------------------------------------------------

FAKE_SLURM = {
    "sbatch": r"""
# runs the batch script in the background, in a session of its own; "Submitted batch job ID"
script="${@: -1}"
id=$(( $(cat "$FAKESLURM_STATE/counter" 2>/dev/null || echo 1000) + 1 )); echo $id > "$FAKESLURM_STATE/counter"
if [ -n "$FAKESLURM_REFUSE_FROM" ] && [ "$id" -ge "$FAKESLURM_REFUSE_FROM" ]; then
  echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1
fi
out=$(sed -n 's/^#SBATCH --output=//p' "$script" | sed "s/%j/$id/g; s/%t/0/g")
echo RUNNING > "$FAKESLURM_STATE/$id.state"
SLURM_JOB_ID=$id SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_JOB_NODELIST=localhost \
SLURM_PROCID=0 SLURM_LOCALID=0 setsid bash -c '
  bash "$1" >> "$2" 2>&1 && st=COMPLETED || st=FAILED
  grep -q CANCELLED "$3" || echo $st > "$3"' job "$script" "$out" "$FAKESLURM_STATE/$id.state" \
  < /dev/null > /dev/null 2>&1 &
echo $! > "$FAKESLURM_STATE/$id.pid"
echo "Submitted batch job $id"
""",
    "srun": r"""
# runs the command here, its output to --output and --error (%j and %t expanded)
out=/dev/null; err=/dev/null
while [ $# -gt 0 ]; do case "$1" in
  --output) out=$2; shift 2;; --error) err=$2; shift 2;; --*) shift;; *) break;; esac; done
out=${out//%j/$SLURM_JOB_ID}; err=${err//%j/$SLURM_JOB_ID}
exec "$@" >> "${out//%t/0}" 2>> "${err//%t/0}"
""",
    "sacct": r"""
# -o JobID,State,NodeList --parsable2 -j ID ...
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  [ "$1" = -j ] && [ -f "$FAKESLURM_STATE/$2.state" ] && echo "$2|$(cat "$FAKESLURM_STATE/$2.state")|localhost"
  shift
done
exit 0
""",
    "scancel": r"""
# scancel ID: the job's process group killed, the job CANCELLED
pid=$(cat "$FAKESLURM_STATE/$1.pid" 2>/dev/null) || exit 1
grep -q RUNNING "$FAKESLURM_STATE/$1.state" && echo CANCELLED > "$FAKESLURM_STATE/$1.state"
kill -KILL -- -"$pid" 2>/dev/null
exit 0
""",
}

#: A model that fails in a Slurm job of seed 1 only (torch is seeded with the run's seed first).
FLAKY_MODEL = '''
import os

import torch
from torch import nn

from harness.model_registry import register_model


@register_model("flaky17", "an MLP whose seed-1 run fails in a Slurm job")
def flaky17(input_shape, num_classes):
    if os.environ.get("SLURM_JOB_ID") and torch.initial_seed() == 1:
        raise ValueError("flaky17 refuses seed 1 in a Slurm job")
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))
'''


@pytest.fixture
def fake_slurm(monkeypatch, tmp_path) -> Path:
    """sbatch, srun, sacct and scancel on PATH, each Slurm job a local background process; the
    sketch's ~/.cache/memprox/slurm under tmp_path. Returns the state folder (ID.state, ID.pid)."""
    submitit = pytest.importorskip("submitit")
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE_SLURM.items():
        script = bin_dir / name
        script.write_text("#!/bin/bash\n" + body.lstrip("\n"))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    package_dirs = [str(Path(submitit.__file__).parents[1]), str(ROOT), str(tmp_path)]
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*package_dirs, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKESLURM_STATE", str(state))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield state
    for pid_file in state.glob("*.pid"):  # a job the test left running: its process group
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


@pytest.mark.slow  # 13 s: the docs' Slurm sketch end to end
def test_the_slurm_sketch_gives_the_serial_scores_and_reports_a_failed_job(fake_slurm, registered, monkeypatch,
                                                                           tmp_path) -> None:
    registered("SlurmExecutor")
    (tmp_path / "flaky17.py").write_text(FLAKY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))  # what the import registers goes with the test
    monkeypatch.delitem(sys.modules, "flaky17", raising=False)
    import flaky17  # (registers the model here; each Slurm job imports it again)

    monkeypatch.setitem(sys.modules, "flaky17", flaky17)  # recorded as absent before: gone after the test

    with pytest.warns(RuntimeWarning, match="flaky17 refuses seed 1 in a Slurm job"):  # the job's traceback
        slurm = run_experiment(**SMALL, model="flaky17", seeds=2, executor="slurm", store=str(tmp_path / "slurm"))
    serial = run_experiment(**SMALL, model="flaky17", seeds=[0], executor="inprocess",
                            store=str(tmp_path / "serial"))
    assert len(slurm.trained) == 1 and slurm.trained == serial.trained
    assert any("flaky17 refuses seed 1 in a Slurm job" in failure for failure in slurm.failures), slurm.failures
    pd.testing.assert_frame_equal(slurm.scores["noise=0.1_seed0"], serial.scores["noise=0.1_seed0"])
    assert sorted(p.name for p in fake_slurm.glob("*.state")) == ["1001.state", "1002.state"]  # one Slurm job a run


def test_a_refused_submission_is_one_line_and_cancels_the_jobs_submitted_before(fake_slurm, registered, monkeypatch,
                                                                                tmp_path) -> None:
    """The sketch submitted outside its try: sbatch refusing the second job left the first running."""
    registered("SlurmExecutor")
    monkeypatch.setenv("FAKESLURM_REFUSE_FROM", "1002")
    with pytest.raises(WorkersLost, match="sbatch refused a job: .*Invalid partition name"):
        run_experiment(**SMALL, seeds=2, executor="slurm", store=str(tmp_path / "store"))
    assert (fake_slurm / "1001.state").read_text().strip() == "CANCELLED"
