"""Process helpers shared by the tests that start the CLI and signal or kill it.

A test finds its own processes by an environment entry it set (children inherit it), never by
name: other tests, and other users' runs, may be running the same command at the same time.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def live_with_env(entry: str) -> list[int]:
    """Live processes (zombies excluded) whose environment holds `entry` ("NAME=value")."""
    key, found = entry.encode(), []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if key in Path(f"/proc/{name}/environ").read_bytes().split(b"\0") and \
                    Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                found.append(int(name))
        except OSError:
            pass
    return found


def wait_until(condition: Callable[[], bool], seconds: float, proc: subprocess.Popen | None = None,
               poll: float = 0.1) -> bool:
    """Whether `condition` held within `seconds`; a `proc` that ends meanwhile fails the test with its stderr."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.returncode}\n{proc.stderr.read()}")
        time.sleep(poll)
    return condition()
