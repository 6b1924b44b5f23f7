"""The local pool's worker protocol under a worker that freezes half-way through a message.

A worker frozen (SIGSTOP) after it had sent part of a result held the driver in `Connection.recv` for
good: with --job-timeout the job was never stopped, and a first Ctrl-C was held until a read that
never ended. The driver now reads only what has arrived (`harness.executors.channel`). The freezes
are real (a partial frame written to the worker's socket, then SIGSTOP); nothing asserts on timings.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import threading
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from test_job_timeout20 import _alive, _job

from harness.errors import RunFailed
from harness.executors.local import LocalExecutor
from harness.jobs import Job


# job functions the workers import from this module -------------------------------------------
def freeze_mid_send(pid_file: str, job: Job) -> int:
    """In the job of seed 0: write the start of a result frame (a length, then a few of its bytes) to the
    worker's socket, as a send cut short, then stop this process (SIGSTOP). Else: this worker's pid."""
    if job.specs[0].seed == 0:
        fd = int(sys.argv[1])  # `python -m harness.executors.worker FD DRIVER_PID`
        os.write(fd, struct.pack("!i", 1_000_000) + pickle.dumps((0, True, "cut"))[:5])
        Path(pid_file + ".tmp").write_text(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)  # whole when it appears: the Ctrl-C test's watcher reads it
        os.kill(os.getpid(), signal.SIGSTOP)
    return os.getpid()


# the freeze -----------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_a_worker_frozen_mid_send_is_stopped_at_its_limit_and_the_others_finish(tmp_path) -> None:
    pid_file = tmp_path / "frozen.pid"
    executor = LocalExecutor(workers=1, progress=False, fn=partial(freeze_mid_send, str(pid_file)),
                             job_timeout=2.0)
    try:
        outcomes = {job.specs[0].seed: outcome for job, outcome in executor.run([_job(0), _job(1), _job(2)])}
    finally:
        executor.close()
    frozen = int(pid_file.read_text())
    assert isinstance(outcomes[0], RunFailed)
    assert str(outcomes[0]).startswith(f"job {_job(0).label()}: stopped after 2 s, its --job-timeout, and not "
                                       "retried")
    assert isinstance(outcomes[1], int) and outcomes[1] == outcomes[2] != frozen  # one new worker ran both
    assert not _alive(frozen)


@pytest.mark.timeout(90)
def test_without_a_limit_a_ctrl_c_stops_a_run_held_by_a_worker_frozen_mid_send(tmp_path) -> None:
    """The first Ctrl-C stops the run (it used to wait for a read that never ended) and no worker is left."""
    pid_file = tmp_path / "frozen.pid"
    executor = LocalExecutor(workers=1, progress=False, fn=partial(freeze_mid_send, str(pid_file)))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (xdist ignores it)
    done = threading.Event()

    def ctrl_c_once_frozen() -> None:
        while not done.wait(0.1):
            if pid_file.exists() and _stopped(int(pid_file.read_text())):
                done.wait(1.0)  # the driver has read the partial frame by then, or waits on it
                os.kill(os.getpid(), signal.SIGINT)
                return

    watcher = threading.Thread(target=ctrl_c_once_frozen, daemon=True)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(executor.run([_job(0)]))
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)
        executor.close()
    assert executor.take_finished() == [] and not executor._pool
    assert not _alive(int(pid_file.read_text()))


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"
    except OSError:
        return False


# the frames -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 100, 16385, 5_000_000])
def test_the_driver_reads_what_a_worker_connection_sends_in_pieces(size) -> None:
    """The driver's channel parses `Connection.send`'s frames (small, split header and body, several MB),
    and says nothing of a message until its last byte is there."""
    from harness.executors.channel import Channel

    ours, theirs = socket.socketpair()
    channel, sender = Channel(ours), Connection(theirs.detach())
    message = (3, True, b"x" * size)
    thread = threading.Thread(target=sender.send, args=(message,))
    thread.start()
    received = []
    while not received:
        if channel.poll(0):
            received.append(channel.recv())
    thread.join()
    assert received == [message] and not channel.partial()
    sender.send("ready")
    sender.close()
    while not channel.poll(0):
        pass
    assert channel.recv() == "ready"
    with pytest.raises(EOFError):
        channel.recv()
    channel.close()


def test_a_message_cut_short_is_partial_and_never_handed_out() -> None:
    from harness.executors.channel import Channel

    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    theirs.sendall(struct.pack("!i", 10) + b"abc")
    assert not channel.poll(0) and channel.partial()
    with pytest.raises(EOFError):
        channel.recv()
    theirs.close()
    assert channel.poll(0)  # the end of the stream: the worker is gone, the cut message with it
    with pytest.raises(EOFError):
        channel.recv()
    channel.close()


def freeze_mid_send_once(marker: str, job: Job) -> object:
    """The first time seed 0's job comes: a result frame cut short, then SIGSTOP; else run_job."""
    from harness.jobs import run_job

    if job.specs[0].seed == 0 and not os.path.exists(marker):
        Path(marker).touch()
        os.write(int(sys.argv[1]), struct.pack("!i", 1_000_000) + b"\x80\x05")
        os.kill(os.getpid(), signal.SIGSTOP)
    return run_job(job)


# slow (two CLI runs, ~30 s on a busy 2-core machine): the stop itself is tested above
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_cli_stores_the_other_runs_and_the_rerun_trains_the_frozen_one(tmp_path, monkeypatch, capsys) -> None:
    from harness.api import experiment_config
    from harness.cli import main
    from harness.experiment import Experiment

    real = LocalExecutor.from_config.__func__  # type: ignore[attr-defined]

    def freezing(cls, cfg):  # type: ignore[no-untyped-def]
        executor = real(cls, cfg)
        executor.fn = partial(freeze_mid_send_once, str(tmp_path / "frozen-once"))
        return executor

    monkeypatch.setattr(LocalExecutor, "from_config", classmethod(freezing))
    options = dict(proxies="csl", tasks="mislabeled", noise_rates="0.1", seeds=2, epochs=2, device="cpu",
                   bootstrap=0, store=tmp_path / "store", out=tmp_path / "out")
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    assert main(["run", *args, "--no-progress", "--workers", "2", "--job-timeout", "5"]) == 1
    err = capsys.readouterr().err
    exp = Experiment(experiment_config(executor="inprocess", **options))
    frozen, other = sorted(exp.plan.runs, key=lambda spec: spec.seed)
    assert f"error: job {frozen.label()}: stopped after 5 s, its --job-timeout" in err
    assert exp.store.get(other) is not None and exp.store.get(frozen) is None
    assert main(["run", *args, "--no-progress", "--workers", "2", "--job-timeout", "5"]) == 0
    assert exp.store.get(frozen) is not None


def test_a_send_to_a_worker_that_takes_nothing_gives_up_and_a_corrupt_frame_is_an_error() -> None:
    """A worker that reads nothing (frozen) fails the send after its timeout instead of holding the driver;
    a negative length, which no Connection writes, is a ProtocolError (an OSError: the worker is replaced)."""
    from harness.executors.channel import Channel, ProtocolError

    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    with pytest.raises(TimeoutError, match=r"^the worker took no data for 0\.2 s$"):
        channel.send(b"x" * 50_000_000, timeout=0.2)
    theirs.sendall(struct.pack("!i", -7) + b"junk")
    assert channel.poll(0) and not channel.partial()
    with pytest.raises(ProtocolError, match=r"^a message of length -7 from the worker: its stream is corrupt$"):
        channel.recv()
    assert isinstance(ProtocolError("x"), OSError)
    channel.close()
    theirs.close()
