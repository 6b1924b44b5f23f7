"""The store probe of a Ray run, without Ray: the driver writes a file named after a
random token into the store's partial/, holding that token; a job checkpoints only where it finds
that file there. Before, the driver guessed from the nodes' IP addresses, and a cluster whose store
every node mounts never checkpointed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.executors import ray_jobs, ray_probe
from harness.executors.ray_probe import StoreProbe, probe_path, sees_probe
from harness.jobs import DataSource, Job


def _store(tmp_path: Path) -> Path:
    (tmp_path / "store" / "partial").mkdir(parents=True)
    return tmp_path / "store"


def _job(root: Path | None) -> Job:
    return Job(specs=("spec",), requests=(), engine="single", source=DataSource("digits"),  # type: ignore[arg-type]
               checkpoint_root=str(root) if root else None)


def test_the_probe_holds_its_token_at_its_path_and_goes_with_the_run(tmp_path) -> None:
    root = _store(tmp_path)
    probe = StoreProbe({str(root)})
    path = probe_path(root, probe.token)
    assert probe.live == probe.token and len(probe.token) == 32
    assert path.parent == root / "partial" and ray_probe.NAME.fullmatch(path.name)
    assert path.read_text().split("\n")[:3] == [probe.token, socket.gethostname(), str(os.getpid())]
    assert sees_probe(root, probe.token) and not sees_probe(root, "0" * 32)
    probe.remove()
    assert os.listdir(root / "partial") == [] and not sees_probe(root, probe.token)


def test_a_job_checkpoints_only_where_it_sees_the_probe(tmp_path) -> None:
    """The job's side, as Ray's worker calls it: the store's path with the probe keeps the folder; the
    same path without it (another disk there), another token (a killed driver's) or none drop it."""
    root, elsewhere = _store(tmp_path), _store(tmp_path / "other")
    probe = StoreProbe({str(root)})
    stale = probe_path(elsewhere, "f" * 32)
    stale.write_text("f" * 32 + "\nhost\n1\n")
    seen: list[Job] = []
    for where, token in ((root, probe.live), (elsewhere, probe.live), (elsewhere, "f" * 31 + "e"), (root, None)):
        ray_jobs._call(seen.append, _job(where), socket.gethostname(), probe=token)  # type: ignore[arg-type]
    assert [job.checkpoint_root for job in seen] == [str(root), None, None, None]
    probe.remove()


def test_a_probe_that_cannot_be_written_means_no_checkpoints_said_once(tmp_path, capsys) -> None:
    """A full disk or a read-only partial/ (here: a file in its place) must not stop the run."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "partial").write_text("not a folder")
    probe = StoreProbe({str(tmp_path / "store")})
    assert probe.live is None and probe.placed == {}
    err = capsys.readouterr().err
    assert err.count("warning: cannot write") == 1 and "write no in-run checkpoints" in err
    probe.remove()  # nothing to remove: no error
    assert StoreProbe(set()).live is None  # no job checkpoints (the planner gave none a store)
    assert StoreProbe({str(tmp_path / "no-store")}).live is None and not (tmp_path / "no-store").exists()
    assert capsys.readouterr().err.count("warning: cannot write") == 1  # a store path that is no store: made none


def test_probes_of_killed_drivers_on_this_host_are_removed_and_no_other(tmp_path) -> None:
    root = _store(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    here, other = socket.gethostname(), "another-host"
    files = {
        "a" * 32: f"{'a' * 32}\n{here}\n{pid}\n",  # a killed driver's, here: removed
        "b" * 32: f"{'b' * 32}\n{other}\n{pid}\n",  # another host's: its process cannot be checked here
        "c" * 32: f"{'c' * 32}\n{here}\n{os.getpid()}\n",  # a live driver's
        "d" * 32: f"{'e' * 32}\n{here}\n{pid}\n",  # contents of another name: not a probe of the store's
        "0" * 32: "a user's notes\n",
    }
    for token, text in files.items():
        probe_path(root, token).write_text(text)
    (root / "partial" / "notes.txt").write_text("a user's file")
    probe = StoreProbe({str(root)})
    left = sorted(os.listdir(root / "partial"))
    probe.remove()
    assert left == sorted([*(probe_path(root, t * 32).name for t in "bcd0"), probe_path(root, probe.token).name,
                           "notes.txt"])

@pytest.mark.skipif(ray_probe.fcntl is None, reason="no flock here")
def test_a_locked_probe_is_kept_whatever_its_process_id_says(tmp_path) -> None:
    """A live driver in another PID namespace on this host shows a process id that looks gone here."""
    root = _store(tmp_path)
    other = StoreProbe({str(root)})
    path = probe_path(root, other.token)
    path.write_text(f"{other.token}\n{socket.gethostname()}\n999999999\n")  # same file: its lock is held
    assert ray_probe.remove_dead_probes(root / "partial") == []
    other.remove()
    assert not path.exists()
