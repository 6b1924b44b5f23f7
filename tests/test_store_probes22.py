"""`store info` and `store prune --leftovers` know the probe file a Ray run writes into partial/
(`harness.executors.ray_probe`): it was counted among "other files ... not the store's", and one a killed
driver left stayed until the next Ray run on that host. A live run's probe (its lock held, its process
alive) is never removed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from harness.cli import main
from harness.executors.ray_probe import StoreProbe, probe_path
from harness.store import RunStore

DEAD_TOKEN = "ab" * 16


def _dead_probe(root: Path) -> Path:
    """A probe as a driver writes it, naming this host and a process that has ended."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    path = probe_path(root, DEAD_TOKEN)
    path.write_text(f"{DEAD_TOKEN}\n{socket.gethostname()}\n{int(child.stdout)}\n")
    return path


def test_info_counts_probes_not_as_foreign_files(tmp_path, capsys) -> None:
    RunStore(tmp_path)
    _dead_probe(tmp_path)
    (tmp_path / "partial" / "notes.txt").write_text("mine")
    assert main(["store", "info", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Ray run probes: 1 " in out
    assert "other files in runs/ and partial/ (not the store's, never touched): 1," in out  # notes.txt alone


def test_prune_leftovers_removes_a_killed_runs_probe_and_keeps_a_live_one(tmp_path, capsys) -> None:
    RunStore(tmp_path)
    live = StoreProbe({str(tmp_path)})  # this process's: alive, its lock held (it removes dead probes first)
    dead = _dead_probe(tmp_path)
    try:
        assert main(["store", "prune", "--leftovers", "--dry-run", "--store", str(tmp_path)]) == 0
        assert f"would remove partial/{dead.name} (the probe file of a killed Ray run)" in capsys.readouterr().out
        assert dead.exists()
        assert main(["store", "prune", "--leftovers", "--store", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert f"removed partial/{dead.name} (the probe file of a killed Ray run)" in out
        assert not dead.exists()
        assert probe_path(tmp_path, live.token).read_text().split("\n")[0] == live.token
        assert sorted(os.listdir(tmp_path / "partial")) == [probe_path(tmp_path, live.token).name]
    finally:
        live.remove()
    assert os.listdir(tmp_path / "partial") == []
