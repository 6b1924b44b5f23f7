"""Stored runs and earlier outputs survive REAL failures that strike in the middle of an experiment, not
monkeypatched ones: a tmpfs filled by another process the moment the first entry is stored, and an --out
made read-only (chmod 555) while the runs are evaluated, with the experiment running as an unprivileged
user (root ignores permissions). Each checks the exit code, one `error:` line naming the path and the fix,
no traceback, every stored entry byte for byte, and a rerun that trains only what was never stored.
Both need root (mount, setpriv) and skip elsewhere; each runs the CLI several times, hence `slow`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _args(store: Path, out: Path, seeds: int = 2, executor: tuple[str, ...] = ("inprocess",),
          epochs: int = 2) -> list[str]:
    """The smallest experiment of `seeds` runs; in this process by default (a user that may not run the venv's
    interpreter through its link cannot start workers)."""
    return [sys.executable, "-m", "harness", "run", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", str(seeds),
            "--noise-rates", "0.1", "--epochs", str(epochs), "--subset", "200", "--device", "cpu",
            "--executor", *executor, "--no-progress", "--bootstrap", "0", "--store", str(store), "--out", str(out)]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MEMPROX_CACHE": str(tmp / "cache"), "HOME": str(tmp / "home")}


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _stored(store: Path) -> list[Path]:
    runs = store / "runs"
    return sorted(e for e in runs.iterdir() if (e / "manifest.json").is_file()) if runs.is_dir() else []


def _while_running(cmd: list[str], env: dict[str, str], cwd: Path, when: Callable[[], bool],
                   act: Callable[[], None]) -> tuple[subprocess.CompletedProcess, bool]:
    """Run `cmd`; the moment `when()` holds (polled from another thread), `act()`. Returns the result and
    whether it acted."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acted = threading.Event()

    def watch() -> None:
        while proc.poll() is None:
            if when():
                act()
                acted.set()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = proc.communicate(timeout=300)
    watcher.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), acted.is_set()


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _runs_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("runs:"))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 80 MiB tmpfs: above the 64 MiB the store and --out must have free when the experiment starts."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Fill `path`'s file system: one fallocate of all its free room (fast: the next run must not be stored
    meanwhile), then writes for what rounding left."""
    with open(path, "ab", buffering=0) as f:
        with contextlib.suppress(OSError):
            os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(path.parent).free)
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"x" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


@pytest.mark.slow
def test_a_disk_filled_once_the_first_run_is_stored_keeps_it_and_the_rerun_trains_only_the_other(tmpfs: Path) -> None:
    store, out = tmpfs / "store", tmpfs / "out"
    cmd, env = _args(store, out, 3, ("local", "--workers", "1"), epochs=12), _env(tmpfs.parent)  # stored one by one
    proc, acted = _while_running(cmd, env, tmpfs.parent, lambda: len(_stored(store)) >= 1,
                                 lambda: _fill(tmpfs / "fill"))
    assert acted and proc.returncode == 1, proc.stderr[-3000:]
    line = _error_line(proc)
    assert f"{store / 'runs'}/" in line and "(No space left on device)" in line and "free some space" in line, line
    kept = {e.name: _tree(e) for e in _stored(store)}
    assert len(kept) == 1 and not out.exists()
    (tmpfs / "fill").unlink()
    assert _runs_line(subprocess.run(cmd, env=env, cwd=tmpfs.parent, capture_output=True, text=True, timeout=300)) == \
        "runs: 2 trained, 1 reused from the store"
    assert {name: _tree(store / "runs" / name) for name in kept} == kept  # the kept entry was reused, not rewritten
    assert len(_stored(store)) == 3
    assert [p.name for p in (store / "runs").iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in (store / "partial").iterdir()] == [] if (store / "partial").is_dir() else True


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A folder the user nobody owns, under /tmp (pytest's own are 0700, which nobody may not enter); skips
    where the tests are not root, there is no setpriv, or nobody may not run this interpreter."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    work = Path(tempfile.mkdtemp(prefix="memprox-loss31-"))
    try:
        os.chmod(work, 0o755)
        (work / "home").mkdir()
        subprocess.run(["chown", "-R", "65534:65534", str(work)], check=True)
        probe = subprocess.run([*NOBODY, sys.executable, "-c", "import harness"], env=_env(work), cwd=work,
                               capture_output=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip("the user nobody may not run this interpreter")
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_an_out_made_read_only_while_the_runs_are_evaluated_keeps_the_earlier_outputs(nobody_dir: Path) -> None:
    """As an unprivileged user: the earlier outputs (another experiment's, 1 seed) stay byte for byte, the
    one line names --out and says to make it writable, and the rerun trains nothing."""
    work = nobody_dir
    store, out = work / "store", work / "out"
    env = _env(work)
    first = subprocess.run([*NOBODY, *_args(store, out, seeds=1)], env=env, cwd=work, capture_output=True, text=True,
                           timeout=300)
    assert _runs_line(first) == "runs: 1 trained, 0 reused from the store"
    earlier = _tree(out)
    cmd = [*NOBODY, *_args(store, out), "--overwrite"]
    proc, acted = _while_running(cmd, env, work, lambda: len(_stored(store)) >= 2, lambda: os.chmod(out, 0o555))
    os.chmod(out, 0o755)
    assert acted and proc.returncode == 1, proc.stderr[-3000:]
    line = _error_line(proc)
    assert str(out) in line and "(Permission denied); make it writable or pass another --out" in line, line
    assert _tree(out) == earlier
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] in ([], [".out.memprox-lock"])
    again = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert _runs_line(again) == "runs: 0 trained, 2 reused from the store"
    assert _tree(out) != earlier and (out / "scores" / "noise=0.1_seed1.csv").is_file()


@pytest.mark.parametrize("option", ["--out", "--store"])
def test_a_path_under_a_folder_the_user_may_not_enter_is_one_line_not_a_traceback(nobody_dir: Path,
                                                                                   option: str) -> None:
    """`--out ~otheruser/results` (a home of mode 0700, root's here): until December 2026 a
    traceback with `PermissionError: [Errno 13] Permission denied` (from check_out's `out.exists()` and
    check_place's `is_dir()`), exit 1, where bad input is one `error:` line, exit 2."""
    closed = nobody_dir / "closed"
    closed.mkdir()
    os.chmod(closed, 0o700)  # root's
    paths = {"--store": nobody_dir / "store", "--out": nobody_dir / "out", option: closed / "x"}
    proc = subprocess.run([*NOBODY, *_args(paths["--store"], paths["--out"])], env=_env(nobody_dir), cwd=nobody_dir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _error_line(proc)
    assert line == (f"error: {option} {closed / 'x'} cannot be reached: this user may not enter {closed} (Permission "
                    "denied); " + ("pass an --out in a folder you may enter" if option == "--out" else
                                   "pass another --store (in a folder you may enter)")), line


def test_store_prune_of_a_store_the_user_may_not_enter_is_one_line_not_a_traceback(nobody_dir: Path) -> None:
    """`store info` and `store prune` (both through `store_scan.is_store`) crashed the same way."""
    closed = nobody_dir / "closed"
    closed.mkdir()
    os.chmod(closed, 0o700)  # root's
    proc = subprocess.run([*NOBODY, sys.executable, "-m", "harness", "store", "prune", "--all", "--store",
                           str(closed / "store")], env=_env(nobody_dir), cwd=nobody_dir, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _error_line(proc) == (f"error: --store {closed / 'store'} cannot be reached: this user may not enter "
                                 f"{closed} (Permission denied); pass another --store (in a folder you may enter)")
