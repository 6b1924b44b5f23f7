"""A kill -9 while a finished swap drops the old outputs (storeattack29): `_finish` removed the set-aside folder
as one tree, its journal first, so a kill there left `.OUT.old-PID-RANDOM` with the old outputs and no journal,
never provably memprox's, never removed. The journal now goes after the files it lists."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PUBLISH = """
import os, sys
from pathlib import Path
import harness.file_swap as file_swap
import harness.outputs as outputs

out, n, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
count = [0]
finish = file_swap._finish

def killing(name):
    real = getattr(os, name)
    def call(*a, **k):
        count[0] += 1
        if count[0] == n:
            os._exit(9)
        return real(*a, **k)
    return call

def finishing(aside, journal):  # the new outputs are committed: from here on the old ones are dropped
    if n:
        os.unlink, os.rmdir = killing("unlink"), killing("rmdir")
    finish(aside, journal)

file_swap._finish = finishing
with outputs.staging(out) as tmp:
    (tmp / "leaderboard.csv").write_text(tag)
    (tmp / "scores").mkdir()
    (tmp / "scores" / "a.csv").write_text(tag)
    (tmp / "scores" / "deep").mkdir()
    (tmp / "scores" / "deep" / "b.csv").write_text(tag)
    outputs.write_record(tmp, "ident")
    outputs.publish(tmp, out, "ident", False)
"""


@pytest.mark.parametrize("kill_at", [k if k in (2, 5) else pytest.param(k, marks=pytest.mark.slow)
                                     for k in range(1, 9)])
def test_a_kill_while_the_old_outputs_are_dropped_leaves_nothing_behind(tmp_path, kill_at) -> None:
    script = tmp_path / "publish.py"
    script.write_text(_PUBLISH)
    work = tmp_path / "w"
    work.mkdir()
    out = work / "out"

    def publish(n: int, tag: str) -> int:
        return subprocess.run([sys.executable, str(script), str(out), str(n), tag], capture_output=True).returncode

    assert publish(0, "old") == 0
    (out / "notes.txt").write_text("mine")
    assert publish(kill_at, "new") in (0, 9)
    assert (out / "leaderboard.csv").read_text() == "new" and (out / "scores" / "deep" / "b.csv").read_text() == "new"
    assert publish(0, "newer") == 0
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "leaderboard.csv").read_text() == "newer"
