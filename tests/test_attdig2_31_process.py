"""attdig2_31: top-level statements whose effects differ in each process (a seed from the clock or the pid, a
uuid, the host name, a temporary folder, the time, a log opened in that folder) beside a config read at import,
a 0-byte data file and a folder passed to `open` give one digest in every process: a fresh worker (two fresh
processes here) agrees with this one, so no executor refuses the model and nothing trains again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.code_digest import code_digest
from tests.test_digest31_blind import _load

SIDE = '''import datetime
import json
import os
import random
import socket
import tempfile
import time
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
random.seed(time.time())
np.random.seed(os.getpid())
RUN_ID = uuid.uuid4().hex
HOST = socket.gethostname()
TMP = tempfile.mkdtemp(prefix="side2_31")
NOW = datetime.datetime.now()
print(f"run {RUN_ID} on {HOST} at {NOW}")
NOTES = open(os.path.join(TMP, f"{RUN_ID}.log"), "w")
CFG = json.load(open(os.path.join(HERE, "cfg2_31.json")))
EMPTY = np.fromfile(os.path.join(HERE, "empty2_31.bin"))
try:
    DIRTEXT = open(os.path.join(HERE, "dir2_31")).read()
except IsADirectoryError:
    DIRTEXT = ""
STARTED = {"pid": os.getpid(), "host": HOST}


def build(shape, n):
    return CFG["width"] + len(EMPTY) + len(DIRTEXT) + n
'''
PRINT = "import sys; sys.path.insert(0, sys.argv[1]); import side2_31; from harness.code_digest import code_digest; " \
        "print(code_digest(side2_31.build))"


def test_per_process_side_effects_give_one_digest_in_every_process(tmp_path, monkeypatch) -> None:
    (tmp_path / "cfg2_31.json").write_text(json.dumps({"width": 16}), encoding="utf-8")
    (tmp_path / "empty2_31.bin").write_bytes(b"")
    (tmp_path / "dir2_31").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the module's mkdtemp folders: under tmp_path
    here = code_digest(_load(tmp_path, monkeypatch, {"side2_31.py": SIDE}, "side2_31:build"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONDONTWRITEBYTECODE": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    fresh = [subprocess.run([sys.executable, "-c", PRINT, str(tmp_path)], env=env, capture_output=True, text=True,
                            cwd=cwd, timeout=120, check=True).stdout.splitlines()[-1] for cwd in (tmp_path, Path("/"))]
    assert fresh == [here, here]
    (tmp_path / "cfg2_31.json").write_text(json.dumps({"width": 24}), encoding="utf-8")  # the config is still read
    edited = subprocess.run([sys.executable, "-c", PRINT, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=120, check=True).stdout.splitlines()[-1]
    assert edited != here
