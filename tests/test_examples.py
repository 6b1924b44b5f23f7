"""The examples in examples/ (shown in docs/integrations.md) run as written, offline, and find the
flipped labels they promise to find."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _flipped_share(out: str) -> int:
    match = re.search(r"flipped labels among the 20 suspects: (\d+)%", out)
    assert match, out[-2000:]
    return int(match.group(1))


def test_lightning_example(tmp_path):
    pytest.importorskip("lightning")
    out = _run("lightning_csl.py", tmp_path)
    assert _flipped_share(out) >= 80
    assert (tmp_path / "suspects.png").stat().st_size > 0


def test_hf_trainer_text_example(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    assert _flipped_share(_run("hf_trainer_text_csl.py", tmp_path)) >= 80
