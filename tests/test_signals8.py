"""Runs stopped from outside as machines stop jobs (issue: signals 8). SLURM's time limit, `docker
stop`, Kubernetes and `timeout` send SIGTERM, a closed ssh session sends SIGHUP; before, both killed
the CLI at once (no message, exit -15 / -1, no cleanup). Now they stop it as Ctrl-C does: one line
naming the signal, exit 128 + its number, no worker left, checkpoints kept and a rerun resumes to
the uninterrupted scores. `nohup` keeps SIGHUP ignored; the API leaves the caller's handlers alone.

Processes are found by an environment mark the test gives the driver (its workers inherit it): the
tests never look at, or kill, processes they did not start.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _processes import live_with_env, wait_until

from harness import console
from harness.cli import main as cli_main
from harness.io import interrupts_held

REPO = Path(__file__).resolve().parent.parent
MARK = "MEMPROX_TEST_SIGNALS"
#: A run still training when the test signals it (`--checkpoint-every 0.5`: a checkpoint to keep).
LONG = ["--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--epochs", "2000", "--device", "cpu",
        "--no-progress", "--checkpoint-every", "0.5"]


def marked(mark: str) -> list[int]:
    return live_with_env(f"{MARK}={mark}")


@pytest.fixture
def mark() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):  # whatever a failed test left
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def start(tmp: Path, args: list[str], mark: str, ignore_hup: bool = False, code: str | None = None) -> subprocess.Popen:
    """The CLI in a session of its own, as `sbatch`/`docker run` start it (`code`: a script run instead)."""
    run = ["run", *args, "--out", str(tmp / "out"), "--store", str(tmp / "store")]
    cmd = [sys.executable, "-m", "harness", *run] if code is None else [sys.executable, "-c", code, *run]
    env = {**os.environ, MARK: mark, "PYTHONUNBUFFERED": "1"}
    ignore = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore_hup else None  # what nohup does
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=ignore)


def training(tmp: Path) -> bool:
    """A run has trained long enough to checkpoint."""
    partial = tmp / "store" / "partial"
    return partial.is_dir() and any(partial.glob("*.pt"))


def finish(proc: subprocess.Popen) -> str:
    """Wait for the stopped run (killing it if it hangs); its stderr."""
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return err


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# subprocess runs ---------------------------------------------------------------------------------
def test_sigterm_stops_the_pool_like_ctrl_c(tmp_path: Path, mark: str) -> None:
    """Before: exit -15, no line, nothing cleaned up. SIGTERM to the driver only, as docker and
    Kubernetes send it (the workers run in a session of their own)."""
    proc = start(tmp_path, [*LONG, "--seeds", "2", "--workers", "2"], mark)
    assert wait_until(lambda: training(tmp_path) and len(marked(mark)) == 3, 120, proc), "no job started"
    proc.send_signal(signal.SIGTERM)
    err = finish(proc)
    assert proc.returncode == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM; 0 runs kept in the store and ") and \
        last.endswith("checkpointed, rerun the same command to resume"), err[-2000:]
    assert "Traceback" not in err
    assert wait_until(lambda: marked(mark) == [], 5), marked(mark)
    assert training(tmp_path) and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder beside --out


def test_sighup_stops_a_run_and_the_rerun_resumes_to_the_uninterrupted_scores(tmp_path: Path, mark: str,
                                                                             capfd) -> None:
    """A closed terminal: exit 129 and the line; the same command again resumes from the
    checkpoint and ends with the per-sample scores of a run never interrupted."""
    args = [*LONG[:LONG.index("--epochs")], "--epochs", "100", *LONG[LONG.index("--device"):], "--seeds", "1",
            "--executor", "inprocess", "--bootstrap", "0"]
    proc = start(tmp_path, args, mark)
    assert wait_until(lambda: training(tmp_path), 120, proc), "no run started"
    proc.send_signal(signal.SIGHUP)
    err = finish(proc)
    assert proc.returncode == 129, err[-2000:]
    assert err.strip().splitlines()[-1] == ("stopped by SIGHUP; 0 runs kept in the store and 1 partly trained run "
                                            "checkpointed, rerun the same command to resume"), err[-2000:]
    capfd.readouterr()
    rerun = [*args, "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")]
    assert cli_main(["run", *rerun]) == 0
    assert "(1 resumed from their checkpoints)" in capfd.readouterr().err
    whole = [*args, "--out", str(tmp_path / "whole"), "--store", str(tmp_path / "store2")]
    assert cli_main(["run", *whole]) == 0
    scores = outputs(tmp_path / "out" / "scores")
    assert scores and scores == outputs(tmp_path / "whole" / "scores")


def test_under_nohup_sighup_stays_ignored_and_sigterm_still_stops(tmp_path: Path, mark: str) -> None:
    """`nohup memprox run ...` must outlive the terminal: SIGHUP ignored, as nohup set it."""
    proc = start(tmp_path, [*LONG, "--seeds", "1", "--executor", "inprocess"], mark, ignore_hup=True)
    assert wait_until(lambda: training(tmp_path), 120, proc), "no run started"
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGTERM)  # SIGHUP (1) is delivered first if it were handled
    err = finish(proc)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM; "), err[-2000:]


def test_a_closed_terminal_stops_the_run_with_129(tmp_path: Path, mark: str) -> None:
    """An ssh session closed under a run: the kernel sends SIGHUP and every later write to the
    terminal fails with EIO. Before: killed at once (exit -1); with SIGHUP handled but the final
    line printed into the dead terminal, an OSError traceback and exit 1."""
    master, slave = os.openpty()
    args = ["run", *LONG, "--seeds", "1", "--executor", "inprocess", "--out", str(tmp_path / "out"),
            "--store", str(tmp_path / "store")]
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, MARK: mark}, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # its controlling terminal
    os.close(slave)
    try:
        deadline = time.monotonic() + 120
        while not training(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                os.read(master, 65536)  # keep the terminal's buffer from filling up
    finally:
        os.close(master)  # the terminal goes away
    try:
        assert proc.wait(timeout=30) == 129
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert training(tmp_path) and marked(mark) == []


_AT_TORCH_IMPORT = """
import os, runpy, signal, sys

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop while the slow imports run
        return None

sys.meta_path.insert(0, Spy())
sys.argv = ["harness", *sys.argv[1:]]
runpy.run_module("harness", run_name="__main__")
"""


def test_sigterm_during_the_slow_imports(tmp_path: Path, mark: str) -> None:
    proc = start(tmp_path, ["--seeds", "1"], mark, code=_AT_TORCH_IMPORT)
    err = finish(proc)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip() == "stopped by SIGTERM; nothing was trained yet, rerun the same command to resume"
    assert not (tmp_path / "store").exists()


_WHILE_WRITING = """
import os, signal, sys
import harness.outputs as outputs

real_record, real_rmtree = outputs.write_record, outputs.rmtree

def record(*args, **kwargs):  # every output is in the staging folder: stop before it is published
    os.kill(os.getpid(), signal.SIGTERM)
    return real_record(*args, **kwargs)

def rmtree(*args, **kwargs):  # the scheduler's second SIGTERM arrives while the staging folder goes
    os.kill(os.getpid(), signal.SIGTERM)
    return real_rmtree(*args, **kwargs)

outputs.write_record, outputs.rmtree = record, rmtree
sys.argv = ["harness", *sys.argv[1:]]
from harness.console import main
sys.exit(main())
"""


def test_sigterm_while_outputs_are_written_keeps_the_old_outputs_whole(tmp_path: Path, mark: str) -> None:
    """Before: killed with the staging folder left beside --out. Now the old outputs stay as they
    were, the staging folder is removed, and a second SIGTERM during that cleanup changes nothing."""
    args = ["--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--epochs", "2", "--device", "cpu",
            "--no-progress", "--seeds", "1", "--executor", "inprocess", "--bootstrap", "0"]
    assert cli_main(["run", *args, "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")]) == 0
    before = outputs(tmp_path / "out")
    proc = start(tmp_path, args, mark, code=_WHILE_WRITING)  # the same command again: the runs are reused
    err = finish(proc)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM; "), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert outputs(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "store"]  # no staging folder left


# the handlers ------------------------------------------------------------------------------------
@pytest.fixture
def clean_record() -> Iterator[None]:
    console._received.clear()
    yield
    console._received.clear()


def test_a_stop_signal_waits_while_interrupts_are_held_and_a_repeat_is_ignored(clean_record) -> None:
    """A SIGTERM inside a rollback of swapped files (`interrupts_held`) waits for its end, as Ctrl-C does."""
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            console._stop(signal.SIGTERM, None)
            reached = True
    assert reached and console.stop_signal() == signal.SIGTERM
    console._stop(signal.SIGTERM, None)  # a second one while cleaning up: nothing raised
    assert console.stopped("interrupted; 3 runs kept in the store, rerun to resume") == 143


def test_the_cli_puts_the_callers_handlers_back_and_keeps_an_ignored_sighup(monkeypatch, clean_record) -> None:
    import harness.cli as cli

    mine = signal.signal(signal.SIGTERM, lambda s, f: None)
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        theirs = signal.getsignal(signal.SIGTERM)
        seen = {}

        def spy(args):  # type: ignore[no-untyped-def]
            seen.update(term=signal.getsignal(signal.SIGTERM), hup=signal.getsignal(signal.SIGHUP))
            return 0

        monkeypatch.setattr(cli, "cmd_run", spy)
        assert cli_main(["run", "--seeds", "1"]) == 0
        assert seen == {"term": console._stop, "hup": signal.SIG_IGN}
        assert signal.getsignal(signal.SIGTERM) is theirs and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGHUP, hup)


def test_the_api_leaves_the_callers_signal_handlers(tmp_path: Path) -> None:
    from harness.api import run_experiment

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    run_experiment(dataset="digits", proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1,
                   subset=200, device="cpu", bootstrap=0, store=tmp_path / "store", progress=False,
                   executor="inprocess")
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_joining_ray_leaves_the_signal_handlers(monkeypatch) -> None:
    """`ray.init` sets its own SIGTERM handler (`sys.exit`): a SIGTERM then ended the CLI with exit
    15 or 1 and no line, and an API caller's handler was replaced. A stand-in for Ray does the same."""
    from harness.executors import ray as ray_executor

    class FakeRay:
        @staticmethod
        def init(**kwargs) -> None:  # type: ignore[no-untyped-def]
            signal.signal(signal.SIGTERM, lambda s, f: sys.exit(s))

        @staticmethod
        def is_initialized() -> bool:
            return False

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(ray_executor, "ray", FakeRay)
    monkeypatch.setattr(ray_executor, "_joined", None)  # `_join` records the stand-in's connection
    try:
        ray_executor._join(None, "127.0.0.1:6379")
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, before)
