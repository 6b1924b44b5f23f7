"""A review of SIGTERM/SIGHUP handling (commit 6640521): what still ended a CLI run without its
line or exit code, or hid a failed write.

- A SIGTERM while `ray.init` ran (seconds, on a loaded machine more) met Ray's own handler: exit 15
  (or 1 from a local head's), no line.
- `write_line` swallowed every OSError, so `memprox run ... > log` on a full disk lost the leaderboard
  and exited 0; only a reader gone (EPIPE) or a hung-up terminal (EIO) may end the report quietly.
- A stop signal after the CLI returned (Ray's shutdown in an atexit callback) raised
  KeyboardInterrupt there: a traceback after the final line and Ray's shutdown broken off.
- `harness.cli.main()` took Ctrl-C back for good: a caller that ignores SIGINT got it back raising.

Ray processes are found by the RAY_TMPDIR the test gives them: the tests never touch others'.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _processes import live_with_env

from harness import console
from harness.errors import StorageError

REPO = Path(__file__).resolve().parent.parent
TINY = ["--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--epochs", "2", "--device", "cpu",
        "--no-progress", "--seeds", "1", "--bootstrap", "0"]


@pytest.fixture
def clean_record() -> Iterator[None]:
    console._received.clear()
    yield
    console._received.clear()


# Ray's handlers while ray.init runs ---------------------------------------------------------------
_DURING_RAY_INIT = """
import os, signal, sys
import ray._private.worker as worker

real = worker.connect
def connect(*args, **kwargs):  # inside ray.init, after Ray set its SIGTERM handler
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

worker.connect = connect
sys.argv = ["harness", *sys.argv[1:]]
from harness.console import main
sys.exit(main())
"""


def _ray_processes(tmp: Path) -> list[int]:
    return live_with_env(f"RAY_TMPDIR={tmp}")


def test_sigterm_while_ray_starts_stops_with_143_and_the_line() -> None:
    """Before: exit 15 and no line (Ray's `sys.exit(signum)` handler, set inside ray.init)."""
    pytest.importorskip("ray")
    tmp = Path(tempfile.mkdtemp(prefix="mpx", dir="/tmp"))  # Ray's socket paths must stay short
    env = _ray_env(tmp)
    cmd = [sys.executable, "-c", _DURING_RAY_INIT, "run", *TINY, "--executor", "ray", "--workers", "1",
           "--out", str(tmp / "out"), "--store", str(tmp / "store")]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                              start_new_session=True)
        assert proc.returncode == 143, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == \
            "stopped by SIGTERM; 0 runs kept in the store, rerun the same command to resume", proc.stderr[-2000:]
        deadline = time.monotonic() + 20
        while _ray_processes(tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _ray_processes(tmp) == []
        assert not (tmp / "out").exists()
    finally:
        _reap(tmp)


_AFTER_RAY_STARTS = """
import os, signal, sys, time
seen = []
signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
from harness.executors.ray import RayExecutor
executor = RayExecutor(workers=1, progress=False)
executor._init()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print("seen", seen, flush=True)
executor.shutdown()
"""


def _ray_env(tmp: Path) -> dict[str, str]:
    (tmp / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=str(tmp), HOME=str(tmp / "home"), PYTHONUNBUFFERED="1")
    return env


def _reap(tmp: Path) -> None:
    for pid in _ray_processes(tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(tmp, ignore_errors=True)


def test_after_a_local_ray_started_sigterm_reaches_the_python_handler() -> None:
    """With Ray's own `set_sigterm_handler` a no-op during ray.init, the handler in place must still
    be the one the process runs once Ray (and its C++ core worker) is up."""
    pytest.importorskip("ray")
    tmp = Path(tempfile.mkdtemp(prefix="mpx", dir="/tmp"))
    try:
        proc = subprocess.run([sys.executable, "-c", _AFTER_RAY_STARTS], cwd=REPO, env=_ray_env(tmp),
                              capture_output=True, text=True, timeout=60, start_new_session=True)
        assert proc.returncode == 0 and "seen [15]" in proc.stdout, proc.stderr[-2000:]
    finally:
        _reap(tmp)


def test_ray_init_sets_no_sigterm_handler_of_its_own(monkeypatch) -> None:
    """What the fix relies on: inside `_signals_kept`, Ray's `set_sigterm_handler` changes nothing."""
    ray = pytest.importorskip("ray")
    from harness.executors import ray as ray_executor

    class FakeRay:
        @staticmethod
        def init(**kwargs) -> None:  # type: ignore[no-untyped-def]
            ray._private.utils.set_sigterm_handler(lambda s, f: sys.exit(s))  # as ray.init does
            seen.append(signal.getsignal(signal.SIGTERM))

    seen: list[object] = []
    before = signal.getsignal(signal.SIGTERM)
    setter = ray._private.utils.set_sigterm_handler
    monkeypatch.setattr(ray_executor, "ray", type("R", (), {"init": FakeRay.init, "_private": ray._private,
                                                            "is_initialized": staticmethod(lambda: False)}))
    monkeypatch.setattr(ray_executor, "_joined", None)  # `_join` records the stand-in's connection
    try:
        ray_executor._join(None, "127.0.0.1:6379")
        assert seen == [before] and signal.getsignal(signal.SIGTERM) is before
        assert ray._private.utils.set_sigterm_handler is setter
    finally:
        signal.signal(signal.SIGTERM, before)


# writes that fail ---------------------------------------------------------------------------------
class _Failing(io.StringIO):
    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def write(self, text: str) -> int:
        raise OSError(self.code, os.strerror(self.code))


def test_a_full_disk_under_the_report_is_an_error_and_a_closed_pipe_is_not() -> None:
    with pytest.raises(StorageError, match="No space left on device"):
        console.write_line("| proxy | auroc |", _Failing(errno.ENOSPC))
    console.write_line("| proxy | auroc |", _Failing(errno.EPIPE))  # `| head`: quietly nowhere


def test_the_cli_exits_1_with_a_line_when_stdout_is_full() -> None:
    """Before: `memprox list > /dev/full` (or a run's leaderboard into a full disk) exited 0, nothing written."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "harness", "list"], cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: cannot write to /dev/full (No space left on device); runs that finished stay in the store: "
        "rerun with the output going where it can be written"]


def test_a_full_stderr_does_not_end_a_run(monkeypatch) -> None:
    """Warnings and progress lines are diagnostics: only stdout's report is worth exit 1."""
    from harness.cli import say

    monkeypatch.setattr(sys, "stderr", _Failing(errno.ENOSPC))
    say("warning: something", err=True)
    monkeypatch.setattr(sys, "stdout", _Failing(errno.ENOSPC))
    with pytest.raises(StorageError):
        say("| proxy | auroc |")


def test_a_stop_line_into_a_full_stderr_keeps_the_exit_code(clean_record) -> None:
    console._received.append(signal.SIGTERM)
    real = sys.stderr
    sys.stderr = _Failing(errno.ENOSPC)  # type: ignore[assignment]
    try:
        assert console.stopped(console.KEPT) == 143
    finally:
        sys.stderr = real


# after the run, and around it ---------------------------------------------------------------------
def test_stop_signals_are_ignored_once_the_cli_returned(monkeypatch, clean_record) -> None:
    import harness.cli as cli

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *console.STOP_SIGNALS)}
    monkeypatch.setattr(cli, "main", lambda: 0)
    try:
        assert console.main() == 0
        assert [signal.getsignal(sig) for sig in (signal.SIGINT, *console.STOP_SIGNALS)] == [signal.SIG_IGN] * 3
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


_LATE_SIGTERM = """
import atexit, os, signal, sys, time

def late():  # as Ray's shutdown at exit, when a scheduler's SIGTERM arrives
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
    print("cleanup finished", flush=True)

atexit.register(late)
sys.argv = ["memprox", "list"]
from harness.console import main
sys.exit(main())
"""


@pytest.mark.parametrize("late", ["SIGTERM", "SIGINT"])
def test_a_stop_after_the_run_neither_breaks_off_the_cleanup_nor_the_exit_code(late: str) -> None:
    """Before: KeyboardInterrupt inside the atexit callback (a traceback, the cleanup broken off), or,
    once the interpreter's teardown had set the default back, a finished run killed with 143. A Ctrl-C
    during a local Ray's shutdown at exit did the first (2 of 12 interrupted Ray runs here)."""
    script = _LATE_SIGTERM.replace("signal.SIGTERM", f"signal.{late}")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.endswith("cleanup finished\n") and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_cli_main_puts_back_an_ignored_ctrl_c(monkeypatch, clean_record) -> None:
    """A program that ignores SIGINT and calls `harness.cli.main`: Ctrl-C stops that run, and the
    program's SIGINT is ignored again afterwards (before: Python's handler stayed, raising there)."""
    import harness.cli as cli

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        seen = []
        monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(signal.getsignal(signal.SIGINT)) or 0)
        assert cli.main(["run", "--seeds", "1"]) == 0
        assert seen == [signal.default_int_handler]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)



def test_a_stop_right_after_a_folder_swap_keeps_the_new_folder_and_is_raised_after(tmp_path, monkeypatch) -> None:
    """A Ctrl-C (or SIGTERM, which acts as one) landing just after `rename(new, final)` but still in
    its `try` put `aside` back onto the new, non-empty `final`: an OSError (exit 1) instead of 130/143."""
    import harness.io as hio

    final, new, aside = tmp_path / "final", tmp_path / "new", tmp_path / "aside"
    for folder, text in ((final, "old"), (new, "new")):
        folder.mkdir()
        (folder / "f").write_text(text)
    real_rename = os.rename

    def rename_then_ctrl_c(src, dst):
        real_rename(src, dst)
        if Path(src) == new:  # the second rename is done: the swap is whole
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(hio.os, "rename", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        hio.swap_folder(new, final, aside)
    assert (final / "f").read_text() == "new" and not new.exists()
