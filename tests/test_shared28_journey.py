"""Two experiments at once on one run store, with the default local pool, one of them stopped mid-run by
Ctrl-C or kill -9 (session 28's user journey, docs/executors.md "Two experiments at once"): the other ends
with exactly a serial run's leaderboard and scores, the stopped one's rerun reuses what was stored and
ends equal to serial too, and the store is whole afterwards (`store info`: every entry complete, nothing
partial or left over).

Slow (four CLI runs with worker pools per case; minutes on 2 cores): `pytest -m slow tests/test_shared28_journey.py`.
Timing columns and metrics (`cost_seconds`, `reference_seconds`) are left out of the comparison: the
clock is the only thing allowed to differ.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli_process import ROOT, TINY
from _processes import wait_until

pytestmark = pytest.mark.slow

LOCAL = [a for a in TINY if a not in ("--executor", "inprocess")] + ["--executor", "local"]
OTHER = [*LOCAL[:LOCAL.index("--proxies") + 1], "forgetting", *LOCAL[LOCAL.index("--proxies") + 2:]]


def _start(tmp: Path, args: list[str], store: Path, out: Path) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "MEMPROX_CACHE": str(tmp / "cache"), "PYTHONPATH": path}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args, "--store", str(store), "--out", str(out)],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def _numbers(out: Path) -> tuple[list[dict[str, str]], dict[str, bytes]]:
    rows = [{k: v for k, v in row.items() if "seconds" not in k}
            for row in csv.DictReader((out / "leaderboard.csv").open()) if "seconds" not in row["metric"]]
    return rows, {p.name: p.read_bytes() for p in sorted((out / "scores").iterdir())}


def _counts(err: str) -> tuple[int, int]:
    found = re.search(r"runs: (\d+) trained, (\d+) reused", err)
    assert found, err[-2000:]
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_one_of_two_experiments_on_one_store_stopped_the_other_and_the_rerun_equal_serial(tmp_path, how) -> None:
    serial, runs = {}, 0
    for name, args in (("csl", LOCAL), ("forgetting", OTHER)):
        code, err = _finish(_start(tmp_path, args, tmp_path / f"serial_{name}", tmp_path / f"serial_{name}_out"))
        assert code == 0, err[-2000:]
        serial[name], runs = _numbers(tmp_path / f"serial_{name}_out"), _counts(err)[0]
    store = tmp_path / "store"
    victim = _start(tmp_path, LOCAL, store, tmp_path / "a")
    other = _start(tmp_path, OTHER, store, tmp_path / "b")
    try:
        assert wait_until(lambda: (store / "runs").is_dir() and len(list((store / "runs").iterdir())) >= 10, 300,
                          victim), "nothing stored"
        victim.send_signal(how)
        code, _ = _finish(victim)
        assert code == (130 if how == signal.SIGINT else -signal.SIGKILL)
        code, err = _finish(other)
    finally:
        for proc in (victim, other):
            if proc.poll() is None:
                proc.kill()
    assert code == 0, err[-2000:]
    assert _numbers(tmp_path / "b") == serial["forgetting"]
    time.sleep(0.5)  # a killed driver's workers die with it (PR_SET_PDEATHSIG)
    code, err = _finish(_start(tmp_path, LOCAL, store, tmp_path / "a"))
    assert code == 0, err[-2000:]
    trained, reused = _counts(err)
    assert reused > 0 and trained + reused == runs  # resumed: what either experiment stored is not trained again
    assert _numbers(tmp_path / "a") == serial["csl"]
    info = subprocess.run([sys.executable, "-m", "harness", "store", "info", "--store", str(store)], cwd=ROOT,
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert re.search(r"complete entries: \d+", info.stdout) and "partial checkpoints: 0," in info.stdout
    assert "leftovers of killed processes: 0," in info.stdout, info.stdout
