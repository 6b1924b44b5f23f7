"""Wall-clock and FLOP measurement that does not force a host sync per call.

On CUDA, a `Stopwatch` records event pairs and only resolves them when asked (once per run), so
timing recorders inside the hot loop costs no synchronisation; on CPU it is a perf_counter sum.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode


class Stopwatch:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._cpu_seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def measure(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._cpu_seconds += time.perf_counter() - t0

    def seconds(self) -> float:
        if self._events:
            torch.cuda.synchronize()
            self._cpu_seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
            self._events.clear()
        return self._cpu_seconds

    def add(self, seconds: float) -> None:
        self._cpu_seconds += seconds


@contextmanager
def count_flops(sink: list[int]) -> Iterator[None]:
    """Count FLOPs of the enclosed code with torch's FlopCounterMode and append the total to `sink`.

    FlopCounterMode counts matmul/conv-like ops (forward and backward); element-wise work counts as 0.
    """
    mode = FlopCounterMode(display=False)
    with mode:
        yield
    sink.append(int(mode.get_total_flops()))
