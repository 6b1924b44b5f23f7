"""Wall-clock and FLOP measurement that does not force a host sync per call.

On CUDA, a `Stopwatch` records event pairs and only resolves them when asked (once per run), so
timing recorders inside the hot loop costs no synchronisation; on CPU it is a perf_counter sum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode


class Stopwatch:
    """Seconds of the work done inside `measure()` on `device`. CUDA events are recorded on that
    device's stream, not the current device's: under `--device cuda:1` the current device is still
    cuda:0, whose idle stream timed every recorder at ~0 s."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._cpu_seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def measure(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            stream = torch.cuda.current_stream(self.device)
            start.record(stream)
            yield
            end.record(stream)
            self._events.append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._cpu_seconds += time.perf_counter() - t0

    def seconds(self) -> float:
        if self._events:
            torch.cuda.synchronize(self.device)
            self._cpu_seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
            self._events.clear()
        return self._cpu_seconds

    def add(self, seconds: float) -> None:
        self._cpu_seconds += seconds

    def include(self, other: Stopwatch) -> None:
        """Add what `other` measured so far (its CUDA events unresolved: no sync)."""
        self._cpu_seconds += other._cpu_seconds
        self._events.extend(other._events)


def synchronize(device: torch.device) -> None:
    """Wait until the device has run the work queued on it; nothing on a CPU. CUDA runs kernels
    asynchronously, so a host clock read without this bills the kernels still queued to whatever
    is timed next (an epoch's recorder passes to the next epoch's training clock)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def count_flops(sink: list[int]) -> Iterator[None]:
    """Count FLOPs of the enclosed code with torch's FlopCounterMode and append the total to `sink`.

    FlopCounterMode counts matmul/conv-like ops (forward and backward); element-wise work counts as 0.
    """
    mode = FlopCounterMode(display=False)
    with mode:
        yield
    sink.append(int(mode.get_total_flops()))


class Meter:
    """Charges one recorder its FLOPs and seconds without billing the FLOP counter's overhead.

    FLOPs are counted on the first call only and scaled by the work units done (samples for batch
    recorders, calls for checkpoint recorders). Seconds are timed on every `sample_every`-th other
    call and scaled the same way: per-batch CUDA timing events would otherwise cost more than the
    recorders they time. A recorder called once is timed on its counted call (the only measurement).
    Work done for the recorder outside its calls (joining held batches) is `charge`d as measured.
    """

    def __init__(self, device: torch.device, sample_every: int = 1) -> None:
        self.watch = Stopwatch(device)
        self.first = Stopwatch(device)
        self.sample_every = sample_every
        self.flops_per_unit: float | None = None
        self.first_units = 0.0
        self.calls = 0
        self.units = 0.0
        self.timed_units = 0.0
        self.charged = Stopwatch(device)

    def charge(self, watch: Stopwatch) -> None:
        """Bill this recorder what `watch` measured, on top of its own calls."""
        self.charged.include(watch)

    def run(self, fn: Callable[[], None], units: float = 1.0) -> None:
        if self.flops_per_unit is None:
            sink: list[int] = []
            with self.first.measure(), count_flops(sink):
                fn()
            self.flops_per_unit = sink[0] / units
            self.first_units = units
        elif self.calls % self.sample_every == 0:
            with self.watch.measure():
                fn()
            self.timed_units += units
        else:
            fn()
        self.calls += 1
        self.units += units

    def seconds(self) -> float:
        if self.timed_units:
            return self.watch.seconds() / self.timed_units * self.units + self.charged.seconds()
        return self.first.seconds() + self.charged.seconds()

    def clock_seconds(self) -> float:
        """Estimated seconds these calls spent inside an enclosing clock (the FLOP-counted call at
        its measured, counter-inflated time), to take them out of that clock."""
        if not self.timed_units:
            return self.first.seconds()
        rate = self.watch.seconds() / self.timed_units
        return self.first.seconds() + rate * (self.units - self.first_units)

    def flops(self) -> int:
        return int(round((self.flops_per_unit or 0.0) * self.units))

    def state(self) -> dict:
        return {"seconds": self.watch.seconds(), "first": self.first.seconds(), "calls": self.calls,
                "first_units": self.first_units,
                "flops_per_unit": self.flops_per_unit, "units": self.units, "timed_units": self.timed_units,
                "charged": self.charged.seconds()}

    def load(self, state: dict) -> None:
        self.watch.add(state["seconds"])
        self.first.add(state["first"])
        self.flops_per_unit = state["flops_per_unit"]
        self.calls, self.units, self.timed_units = state["calls"], state["units"], state["timed_units"]
        self.first_units = state["first_units"]
        self.charged.add(state.get("charged", 0.0))  # absent from checkpoints of older versions


def warm_up_flop_counter() -> None:
    """FlopCounterMode's first use pays a one-off setup cost; pay it before anything is timed."""
    with FlopCounterMode(display=False):
        torch.ones(2, 2) @ torch.ones(2, 2)
