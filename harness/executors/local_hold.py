"""Holding a Ctrl-C while the local pool reads and records a worker's result (`interrupt_after`).

Its own module so that `harness.executors.local` stays within the size the tests hold modules to.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (or the SIGTERM or SIGHUP the CLI turns into one) until the block is over, then
    deliver it to the handler it was meant for: a Ctrl-C between reading a worker's result and
    recording it lost that result. A second Ctrl-C in the block raises at once (stop now, as
    everywhere). Nothing in the block waits on a worker (`Channel`). Main thread only: signals
    are handled nowhere else; with Ctrl-C ignored there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)  # handled at once (default: KeyboardInterrupt here)
