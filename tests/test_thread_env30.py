"""A thread-count variable that is no positive whole number is unset before torch loads, with one memprox
line naming it: OpenMP ignored it anyway, printing `libgomp: Invalid value ...` twice, naming no fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.console import drop_bad_thread_counts

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["garbage", "", "0", "-1", "4,", "1e3", "\u0663"])
def test_a_bad_count_is_unset_and_named(value: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    drop_bad_thread_counts()
    assert "OMP_NUM_THREADS" not in os.environ
    assert capsys.readouterr().err.count(f"warning: OMP_NUM_THREADS={value!r} is not a positive whole number") == 1


@pytest.mark.parametrize("value", ["1", "4", "4,2", " 3", "04"])
def test_a_good_count_stays(value: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MKL_NUM_THREADS", value)
    drop_bad_thread_counts()
    assert os.environ["MKL_NUM_THREADS"] == value
    assert capsys.readouterr().err == ""


def test_the_command_line_says_it_once_and_openmp_not_at_all() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "garbage", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "harness", "list"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert done.stderr.count("OMP_NUM_THREADS='garbage' is not a positive whole number") == 1
    assert "libgomp" not in done.stderr
