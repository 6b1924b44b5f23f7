"""run_gpu_session.sh under partial failure, rehearsed with a stand-in python (a device call is
scarce: 15 minutes a task, the machine's start included). A stage that fails is recorded and the
next ones run; a stage the budget cannot give what it needs is skipped while a cheaper one after it
runs; without the dataset its stages are skipped, not run to fail; a signal (the device call's own
limit) stops the stage and still leaves the summary and archives in $OUT."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SESSION = BENCH / "run_gpu_session.sh"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_rehearsal20_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pack_imagefolder = _script("pack_imagefolder")


def _pack(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "src" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "src" / split / cls / f"{i}.jpg")
    pack_imagefolder.pack(tmp_path / "src", tmp_path / "pack", ["train", "test"])
    return tmp_path / "pack"


def _stand_in(tmp_path: Path) -> Path:
    """A python whose pytest runs fail (STANDIN_PYTEST=fail) or never end (sleep), whose experiments
    never end, each recording its pid; the pack and summary scripts are real."""
    stub = tmp_path / "python"
    stub.write_text(f"""#!/usr/bin/env bash
case "$*" in
  *pack_imagefolder.py*|*summarize_gpu_session.py*) exec {sys.executable} "$@" ;;
  *"-m pytest"*) [ "$STANDIN_PYTEST" = fail ] && {{ echo "1 failed in 0.1s"; exit 1; }}
                 echo $$ >> "$STANDIN_PIDS"; exec sleep 30 ;;
  *"-m harness"*|*bench_ray.py*) echo $$ >> "$STANDIN_PIDS"; exec sleep 30 ;;
  *) echo "stand-in python: $*" ;;
esac
""")
    stub.chmod(0o755)
    return stub


def _session(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, dict[str, str]]:
    (tmp_path / "benchmarks").symlink_to(BENCH)  # the session runs from a repository root
    full = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": str(_stand_in(tmp_path)), "MIN_STAGE_S": "2",
            "STANDIN_PIDS": str(tmp_path / "pids"), "STANDIN_PYTEST": "fail", "PACK": str(_pack(tmp_path)), **env}
    return subprocess.Popen(["bash", str(SESSION)], cwd=tmp_path, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True), full


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed child whose parent is gone waits there to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _stop_stand_ins(tmp_path: Path) -> list[int]:
    """The stand-ins still running (each one this test started), ended."""
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()] if (tmp_path / "pids").exists() else []
    alive = [pid for pid in pids if _running(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


def test_a_failed_stage_is_recorded_and_a_stage_the_budget_cannot_fit_is_skipped(tmp_path: Path) -> None:
    proc, _ = _session(tmp_path, BUDGET_S="60", FULL_NEED_S="100",
                       SESSION_STAGES="bench_fp32,full_cifar,bench_bf16")
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        _stop_stand_ins(tmp_path)
    assert proc.returncode == 0, err
    log = (tmp_path / "out" / "session.log").read_text()
    assert "[bench_fp32] rc 1 in" in log and "[bench_bf16] rc 1 in" in log, log
    assert "[full_cifar] skipped:" in log and "it needs 100 s" in log, log  # 60 s left: not started to be cut
    assert "[full_cifar] start" not in log
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| bench_fp32 | 1 |" in summary and "| full_cifar | skipped (budget) |" in summary
    assert "| bench_bf16 | 1 |" in summary


def test_without_the_dataset_its_stages_are_skipped_and_the_others_run(tmp_path: Path) -> None:
    proc, _ = _session(tmp_path, BUDGET_S="60", PACK=str(tmp_path / "not-carried"),
                       SESSION_STAGES="full_cifar,gpu_packing,bench_fp32")
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        _stop_stand_ins(tmp_path)
    assert proc.returncode == 0, err
    log = (tmp_path / "out" / "session.log").read_text()
    assert "[decode] failed (rc 1)" in log, log
    assert "[full_cifar] skipped: the dataset is not there" in log and "[gpu_packing] skipped: the dataset" in log
    assert "[bench_fp32] rc 1 in" in log
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| full_cifar | skipped (no dataset) |" in summary
    assert "checks/decode.log ends:" in summary and "not-carried" in summary  # why: the pack's path


def test_a_signal_stops_the_stage_and_still_writes_the_summary(tmp_path: Path) -> None:
    proc, _ = _session(tmp_path, BUDGET_S="200", STANDIN_PYTEST="sleep", SESSION_STAGES="cuda_tests,bench_fp32")
    log = tmp_path / "out" / "session.log"
    try:
        for _ in range(200):  # until the first stage runs
            if log.exists() and "[cuda_tests] start" in log.read_text() and (tmp_path / "pids").exists():
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        time.sleep(1)  # the stage's timeout passes the signal on
        left = _stop_stand_ins(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop_stand_ins(tmp_path)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "[session] stopped by a signal" in log.read_text()
    assert left == [], "the stopped stage's processes were left running"
    out = tmp_path / "out"
    assert "| cuda_tests | 143 (stopped by a signal) |" in (out / "summary.md").read_text()
    assert {p.name for p in out.iterdir()} == {"session.log", "summary.md", "checks.tgz", "full-cifar10.tgz"}


@pytest.mark.parametrize("script", ["rehearse_gpu_session.sh", "run_gpu_session.sh"])
def test_the_scripts_parse_and_are_executable(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(BENCH / script)], capture_output=True).returncode == 0
    assert os.access(BENCH / script, os.X_OK)
