"""What a run killed while writing its outputs leaves beside --out, seen by a user: a hidden staging
folder (`.NAME.tmp-PID-RANDOM`) that only the next run with the same --out removed, with a marker that
said neither what it was for nor whether it could go, and that no run on another --out mentioned.
The marker now names the --out and says it may be deleted; a run on another --out beside it names it
in one warning and leaves it (its publish may be part-way, which only its own --out's cleanup settles)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from harness.outputs import STAGING_LOCK, STAGING_MARKER, check_out, staging

REPO = Path(__file__).resolve().parents[1]


def _killed_staging(out: Path) -> Path:
    """The staging folder of a process SIGKILLed while it wrote the outputs for `out`."""
    code = ("import os, signal, sys; from harness.outputs import staging\n"
            "with staging(sys.argv[1]) as tmp:\n"
            "    (tmp / 'leaderboard.csv').write_text('x')\n"
            "    print(tmp, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return Path(proc.stdout.strip())


def test_the_staging_marker_says_whose_folder_it_is_and_that_it_may_be_deleted(tmp_path) -> None:
    out = tmp_path / "results"
    with staging(out) as tmp:
        assert tmp is not None and tmp.parent == tmp_path and tmp.name.startswith(".results.tmp-")
        text = (tmp / STAGING_MARKER).read_text()
    assert f"moves them into {out}" in text and f"memprox process {os.getpid()}" in text
    assert "the next run with that --out removes this folder" in text and "delete it yourself" in text


def test_a_run_on_another_out_names_a_killed_runs_staging_folder_and_leaves_it(tmp_path) -> None:
    first = tmp_path / "exp1"
    left = _killed_staging(first)
    assert (left / STAGING_MARKER).is_file() and (left / "leaderboard.csv").is_file()
    with pytest.warns(UserWarning) as said:
        check_out(tmp_path / "exp2", "e2", overwrite=False, store=tmp_path / "store")
    (line,) = [str(w.message) for w in said]
    assert line.startswith(f"{left} was left by a memprox run killed while writing its outputs for {first}")
    assert f"the next run with --out {first} removes it" in line and "you may also delete it" in line
    assert (left / "leaderboard.csv").read_text() == "x"  # left where it was: not this run's to settle
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same --out: removed as before, nothing said
        check_out(first, "e1", overwrite=False, store=tmp_path / "store")
    assert not left.exists()


def test_nothing_is_said_of_a_live_staging_folder_or_a_folder_merely_named_so(tmp_path) -> None:
    code = ("import sys; from harness.outputs import staging\n"
            "with staging(sys.argv[1]) as tmp:\n"
            "    print(tmp, flush=True); sys.stdin.read()\n")
    live = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "exp1")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    mine = tmp_path / ".notes.tmp-123-abcdefgh"  # a user's folder with the name and no marker
    mine.mkdir()
    (mine / STAGING_LOCK).write_text("")
    try:
        assert live.stdout is not None and Path(live.stdout.readline().strip()).is_dir()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_out(tmp_path / "exp2", "e2", overwrite=False, store=tmp_path / "store")
    finally:
        live.kill()
        live.wait()
    assert mine.is_dir()


def test_another_outs_staging_folder_is_only_read_never_given_a_lock_file(tmp_path) -> None:
    """Its publish drops the lock file, then the marker, then renames the folder into its --out: the note
    took the lock with `filelock`, which makes the file, and so could put a lock file into that --out."""
    left = tmp_path / ".exp1.tmp-123-abcdefgh"
    left.mkdir()
    (left / STAGING_MARKER).write_text("")  # its lock file already dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_out(tmp_path / "exp2", "e2", overwrite=False, store=tmp_path / "store")
    assert sorted(p.name for p in left.iterdir()) == [STAGING_MARKER]


def test_another_users_staging_folder_is_said_to_be_theirs_to_delete(tmp_path, monkeypatch) -> None:
    """A group member sees one a run of another member's left: "you may also delete it" asked what it
    may not do (multiuser25). Another user simulated: this process's effective uid reads as another's."""
    from harness import outputs
    from harness.store_entry_files import user_name

    first = tmp_path / "exp1"
    left = _killed_staging(first)
    monkeypatch.setattr(outputs.os, "geteuid", lambda: os.getuid() + 1)
    with pytest.warns(UserWarning) as said:
        outputs._say_others_left(tmp_path / "exp2")
    (line,) = [str(w.message) for w in said]
    assert line.startswith(f"{left} was left")
    assert line.endswith(f"removes it (and finishes or undoes a publish cut short); it is {user_name(os.getuid())}'s, "
                         "who may also delete it")
