"""Ctrl-C between a pipe read and its recording (issue 20): the local pool read a worker's result and
a Ctrl-C arriving before it was recorded dropped it, so the rerun trained that run again. The read
and its recording now hold a Ctrl-C (`interrupt_after`) and deliver it once the result is kept.

Deterministic: the worker pipe's `recv` raises SIGINT itself, right after it has read a result.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import harness.executors.local as local
from harness import console
from harness.console import stop_signal, stop_signals_handled
from harness.executors.channel import Channel
from harness.executors.local import LocalExecutor, interrupt_after


@dataclass(frozen=True)
class Echo:
    value: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def label(self) -> str:
        return f"echo{self.value}"


def echo(job: Echo) -> int:
    """The job function the workers import from this module."""
    return job.value


@pytest.fixture
def ctrl_c_after_a_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Worker pipes whose first read of a result is followed at once by a SIGINT, as a Ctrl-C that
    arrives just after the driver has taken the result out of the pipe; yields the results read."""
    read: list[object] = []

    class Interrupting(Channel):
        def recv(self):
            message = super().recv()
            if isinstance(message, tuple) and len(message) == 3 and not read:
                read.append(message[2])
                signal.raise_signal(signal.SIGINT)
            return message

    monkeypatch.setattr(local, "Channel", Interrupting)
    yield read


def test_a_result_read_just_before_a_ctrl_c_is_handed_back(ctrl_c_after_a_read) -> None:
    executor = LocalExecutor(workers=1, progress=False, fn=echo)  # type: ignore[arg-type]
    outcomes = executor.run([Echo(7)])  # type: ignore[list-item]
    try:
        with pytest.raises(KeyboardInterrupt):
            next(outcomes)
    finally:
        executor.close()
    assert ctrl_c_after_a_read == [7]  # it was read from the pipe ...
    assert executor.take_finished() == [(Echo(7), 7)]  # ... and kept (before: [], the result was gone)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the hold is undone


def test_a_second_ctrl_c_in_the_hold_stops_at_once() -> None:
    reached: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupt_after():
        signal.raise_signal(signal.SIGINT)
        reached.append("after the first")
        signal.raise_signal(signal.SIGINT)
        reached.append("after the second")
    assert reached == ["after the first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_ctrl_c_reaches_the_callers_own_handler_once_after_the_block() -> None:
    calls: list[str] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append("handler"))
    try:
        with interrupt_after():
            signal.raise_signal(signal.SIGINT)
            calls.append("block ends")
        assert calls == ["block ends", "handler"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_held_sigterm_of_the_cli_stops_after_the_block_as_sigterm() -> None:
    try:
        with stop_signals_handled():
            recorded = False
            with pytest.raises(KeyboardInterrupt), interrupt_after():
                signal.raise_signal(signal.SIGTERM)
                recorded = True
            assert recorded and stop_signal() == signal.SIGTERM  # the CLI exits 143, not 130
    finally:
        console._received.clear()  # the record of this stop is no later test's


def test_with_ctrl_c_ignored_nothing_is_held() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt_after():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# the same window under Ray: a Ctrl-C while a finished job's result is fetched -----------------
def test_a_ray_result_being_fetched_at_a_ctrl_c_is_handed_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job left the outstanding ones before its result was fetched (`ray.get`, seconds for a run's
    arrays from another node), so a Ctrl-C during the fetch dropped it: `finished_results` never saw it."""
    ray = pytest.importorskip("ray")
    import harness.executors.ray as ray_executor

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    real_get = ray.get

    def interrupted_get(ref, **kwargs):  # the driver's own fetch, without a timeout: Ctrl-C arrives in it
        if "timeout" not in kwargs:
            raise KeyboardInterrupt
        return real_get(ref, **kwargs)

    try:
        executor = ray_executor.RayExecutor(progress=False, fn=echo)  # type: ignore[arg-type]
        outcomes = executor.run([Echo(5)])  # type: ignore[list-item]
        monkeypatch.setattr(ray, "get", interrupted_get)
        with pytest.raises(KeyboardInterrupt):
            next(outcomes)
        monkeypatch.undo()
        assert executor.take_finished() == [(Echo(5), 5)]  # before: []
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if started:
            ray.shutdown()
