"""The CLI in a subprocess of this checkout's code, for the tests that need a process of their own (an
environment variable read at import, such as MPLBACKEND), with the smallest run they share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "quick", "--subset", "300", "--epochs", "2", "--seeds", "1", "--proxies", "csl",
        "--executor", "inprocess", "--no-progress", "--bootstrap", "0"]


def run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # this checkout's code
    environ = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache"), "PYTHONPATH": path, **env}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=environ, timeout=300)
