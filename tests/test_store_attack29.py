"""Session 29's attack on the store's place and cleanup rules (storeattack29)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.store import RunStore, default_store


def _refusal(root: Path) -> str:
    with pytest.raises(HarnessError) as refused:
        RunStore(root, create=False).check_writable()
    return str(refused.value)


def test_a_store_path_through_a_file_names_the_file_not_permissions(tmp_path, monkeypatch) -> None:
    """`--store FILE/x` said `.../runs is not writable (Not a directory); fix its permissions or pass another --store`:
    no permission is wrong; the path runs through a file."""
    monkeypatch.delenv("MEMPROX_CACHE", raising=False)
    (tmp_path / "notes.txt").write_text("mine")
    root = tmp_path / "notes.txt" / "x"
    said = _refusal(root)
    assert said == (f"run store {root} cannot be made: its path runs through {tmp_path / 'notes.txt'}, which is a "
                    "file, not a folder; pass a --store whose path is folders only")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_store_from_memprox_cache_names_the_variable(tmp_path, monkeypatch) -> None:
    """MEMPROX_CACHE=FILE (no --store given) was told to 'pass another --store', naming neither the variable nor the
    file."""
    (tmp_path / "cache").write_text("mine")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    root = default_store()
    said = _refusal(root)
    assert said == (f"run store {root} cannot be made: its path runs through {tmp_path / 'cache'}, which is a file, "
                    f"not a folder; set MEMPROX_CACHE to a folder (it is {tmp_path / 'cache'}) or pass --store")


def test_a_store_from_memprox_cache_refused_by_its_place_names_the_variable(tmp_path, monkeypatch) -> None:
    """`$MEMPROX_CACHE/store` being a file said `--store ... is a file`, a flag the user never gave."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "store").write_text("mine")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    said = _refusal(default_store())
    assert said.startswith(f"the run store {tmp_path / 'cache' / 'store'} (from MEMPROX_CACHE={tmp_path / 'cache'}) "
                           "is a file, not a folder")
    assert "--store" not in said.split(";")[0]


def _entry(runs: Path, digest: str = "0123456789abcdef0123") -> Path:
    (runs / digest).mkdir(parents=True)
    (runs / digest / "manifest.json").write_text("{}")
    return runs / digest


@pytest.mark.parametrize("extra", ["README", "Thumbs.db", "lost+found/", "tmp/"])
def test_a_store_of_runs_alone_with_a_file_beside_its_entries_is_still_a_store(tmp_path, capsys, extra) -> None:
    """A store copied with `rsync` of runs/ alone, or whose user deleted partial/ and locks/, with a README in runs/
    (or runs/ a disk of its own, with its lost+found) was refused by `run` as 'a folder of other files (runs)' and by
    `store info` as another tool's runs/."""
    from harness.cli import main
    from harness.store_place import check_place
    from harness.store_scan import is_store

    root = tmp_path / "store"
    _entry(root / "runs")
    (root / "runs" / extra).mkdir() if extra.endswith("/") else (root / "runs" / extra).write_text("ours")
    check_place(root)
    assert is_store(root)
    assert main(["store", "info", "--store", str(root)]) == 0
    assert "run store:" in capsys.readouterr().out


@pytest.mark.parametrize("inside", ["Dec05_12-00-00_host", "0123456789abcdef0123"])
def test_a_projects_tensorboard_runs_is_still_no_store(tmp_path, inside) -> None:
    """A digest-named folder without a manifest.json is no entry of the store's: TensorBoard's runs/ stays refused."""
    from harness.store_place import check_place
    from harness.store_scan import is_store

    (tmp_path / "runs" / "Dec05_12-00-00_host").mkdir(parents=True)
    (tmp_path / "runs" / inside).mkdir(exist_ok=True)
    with pytest.raises(HarnessError, match=r"is a folder of other files \(runs\)"):
        check_place(tmp_path)
    assert not is_store(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


_PUBLISH = """
import os, sys
from pathlib import Path
import harness.file_swap as file_swap
import harness.outputs as outputs

out, n, tag, phase = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
count = [0]
release, finish = outputs._release, file_swap._finish

def killing(name):
    real = getattr(os, name)
    def call(*a, **k):
        count[0] += 1
        if count[0] == n:
            os._exit(9)
        return real(*a, **k)
    return call

def arm():
    if n:
        os.unlink, os.rmdir = killing("unlink"), killing("rmdir")

def released(tmp):  # the outputs are published: from here on the staging folder is removed
    release(tmp)
    arm()

def finishing(aside, journal):  # the new outputs are committed: from here on the old ones are dropped
    arm()
    finish(aside, journal)

if phase == "staging":
    outputs._release = released
else:
    file_swap._finish = finishing
with outputs.staging(out) as tmp:
    (tmp / "leaderboard.csv").write_text(tag)
    (tmp / "scores").mkdir()
    (tmp / "scores" / "a.csv").write_text(tag)
    if phase == "finish":
        (tmp / "scores" / "deep").mkdir()
        (tmp / "scores" / "deep" / "b.csv").write_text(tag)
    outputs.write_record(tmp, "ident")
    outputs.publish(tmp, out, "ident", False)
"""


def _publish_here(out: Path, tag: str, phase: str) -> int:
    """_PUBLISH without a kill point, in this process."""
    from harness import outputs

    with outputs.staging(out) as tmp:
        (tmp / "leaderboard.csv").write_text(tag)
        (tmp / "scores").mkdir()
        (tmp / "scores" / "a.csv").write_text(tag)
        if phase == "finish":
            (tmp / "scores" / "deep").mkdir()
            (tmp / "scores" / "deep" / "b.csv").write_text(tag)
        outputs.write_record(tmp, "ident")
        outputs.publish(tmp, out, "ident", False)
    return 0


def _slow_but(phase: str, kill_at: int, *fast: int):
    return pytest.param(phase, kill_at, marks=() if kill_at in fast else pytest.mark.slow)


@pytest.mark.parametrize(("phase", "kill_at"), [*(_slow_but("staging", k, 2) for k in range(1, 7)),
                                                *(_slow_but("finish", k, 2) for k in range(1, 9))])
def test_a_kill_while_memprox_removes_its_own_folders_leaves_nothing_the_rerun_keeps(tmp_path, phase, kill_at) -> None:
    """`staging`: removing the staging folder after a publish into an existing --out removed its marker before its
    scores/: a kill -9 then left `.OUT.tmp-PID-RANDOM` with the lock and an empty scores/, no longer provably
    memprox's, which no later run removed. `finish`: a finished swap removed the set-aside folder as one tree, its
    journal first, so a kill left `.OUT.old-PID-RANDOM` with the old outputs and no journal, never removed (the
    journal now goes after the files it lists). Kill points failing before: staging 2, 3; finish 2 to 6."""
    import subprocess
    import sys

    script = tmp_path / "publish.py"
    script.write_text(_PUBLISH)
    work = tmp_path / "w"
    work.mkdir()
    out = work / "out"

    def publish(n: int, tag: str) -> int:
        if not n:  # nothing killed: the same publish in this process (a process start is most of this test)
            return _publish_here(out, tag, phase)
        return subprocess.run([sys.executable, str(script), str(out), str(n), tag, phase],
                              capture_output=True).returncode

    assert publish(0, "old") == 0
    (out / "notes.txt").write_text("mine")
    assert publish(kill_at, "new") in (0, 9)
    assert (out / "leaderboard.csv").read_text() in ("old", "new") if phase == "staging" else \
        (out / "leaderboard.csv").read_text() == "new"
    assert publish(0, "newer") == 0
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "leaderboard.csv").read_text() == "newer"
