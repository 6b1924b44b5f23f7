"""Kill -9 and resume, session 29: the driver of the local pool killed with SIGKILL (no handler runs, no
line, no cleanup) while a two-phase SSFT run and a base run train and checkpoint, then the same command
again. The rerun resumes from the checkpoints and stores, entry for entry, what a run never killed stores:
every array's checksum, the history, accuracies, FLOPs and machine record; only seconds differ. The scores
and the leaderboard's metric columns are the same bits. (The randomized kill harness of this session, 30
kills of the driver, of one worker and Ctrl-C at spread delays under both executors, found no divergence;
this is its smallest case that keeps a two-phase run's resume across both executors' kill path.)"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from _processes import live_with_env, wait_until

from harness.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
MARK = "MEMPROX_TEST_RESUME29"
ARGS = ["--proxies", "csl,ssft", "--tasks", "mislabeled", "--noise-rates", "0.1", "--seeds", "1", "--epochs", "60",
        "--device", "cpu", "--no-progress", "--bootstrap", "100"]
#: What an interrupted run may store differently: the clock's readings.
TIMINGS = {"created", "train_seconds", "wall_seconds", "manifest_sha256"}


def _entries(store: Path) -> dict[str, dict]:
    """Every stored run's manifest, seconds left out."""
    entries = {}
    for entry in sorted((store / "runs").iterdir()):
        manifest = json.loads((entry / "manifest.json").read_text())
        for record in manifest["recorders"].values():
            record.pop("seconds")
        entries[entry.name] = {k: v for k, v in manifest.items() if k not in TIMINGS}
    return entries


def _metrics(out: Path) -> list[dict]:
    with open(out / "leaderboard.csv", newline="") as f:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]


def _scores(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "scores").iterdir())}


def _checkpointed_past(partial: Path, files: int) -> bool:
    return partial.is_dir() and len(list(partial.glob("*.pt"))) >= files


@pytest.mark.slow  # ~50 s: trains the runs twice; test_kill_fuzz6 and test_local_pool keep kills in the default suite
def test_kill_9_of_the_pools_driver_resumes_to_the_bits_of_a_run_never_killed(tmp_path: Path, capfd) -> None:
    mark = uuid.uuid4().hex
    store, out = tmp_path / "store", tmp_path / "out"
    cmd = [sys.executable, "-m", "harness", "run", *ARGS, "--workers", "2", "--checkpoint-every", "0.001",
           "--store", str(store), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, MARK: mark}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # two runs checkpointed (with 2 workers: an SSFT run among them), none finished
        assert wait_until(lambda: _checkpointed_past(store / "partial", 2), 180, proc), "no checkpoint"
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert wait_until(lambda: live_with_env(f"{MARK}={mark}") == [], 10), "a worker outlived its driver"
    finally:
        for pid in live_with_env(f"{MARK}={mark}"):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    killed_at = {p.name for p in (store / "partial").glob("*.pt")}
    assert killed_at

    capfd.readouterr()
    rerun = [*ARGS, "--workers", "2", "--checkpoint-every", "0.001", "--store", str(store), "--out", str(out)]
    assert cli_main(["run", *rerun]) == 0
    err = capfd.readouterr().err
    assert "resumed from their checkpoints" in err and "resuming digits noise=0.1 mlp seed0" in err, err[-2000:]
    whole = tmp_path / "whole"
    assert cli_main(["run", *ARGS, "--executor", "inprocess", "--store", str(tmp_path / "store2"),
                     "--out", str(whole)]) == 0

    got, want = _entries(store), _entries(tmp_path / "store2")
    assert got.keys() == want.keys() and len(got) == 3  # the base run and SSFT's two two-phase runs
    for digest in want:
        assert got[digest] == want[digest], digest
    assert _scores(out) == _scores(whole)
    assert _metrics(out) == _metrics(whole)
    assert not list((store / "partial").glob("*.pt"))  # each checkpoint went once its run was stored
