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


def count_then_time(fn: Callable[[], None], device: torch.device, count: bool = True) -> tuple[int, float]:
    """(FLOPs, seconds) of `fn`, a repeatable call: counted on one execution and timed on a second,
    so the seconds are `fn`'s own and not the FLOP counter's (the batched ensemble's eval pass).
    `count=False` runs it once, timed (0 FLOPs): its cost is not wanted, only its effect."""
    sink: list[int] = [0]
    if count:
        with count_flops(sink):
            fn()
    watch = Stopwatch(device)
    with watch.measure():
        fn()
        synchronize(device)  # CUDA events time the device's work already; a host clock must wait for it
    return sink[-1], watch.seconds()


class Meter:
    """Charges one recorder its FLOPs and seconds, each measured on an execution of its own.

    FLOPs are counted on the first call only, under torch's FlopCounterMode, and scaled by the work
    units done (samples for batch recorders, calls for checkpoint recorders). The counter adds Python
    work to every op it sees (~4x the digits MLP's eval pass on a CPU), so a counted execution is
    never timed: the first call of a recorder that declares its calls `repeatable` (called twice with
    the same arguments, it leaves what one call leaves: all but train_class_prob, a running sum) runs twice,
    counted and then timed; a recorder called once (the final eval pass, any checkpoint recorder of
    a one-epoch run) has no other call to time. Seconds are timed on every `sample_every`-th call
    and scaled the same way: per-batch CUDA timing events would otherwise cost more than the
    recorders they time. A recorder that does not declare itself repeatable runs once, counted, and
    is billed the other calls' rate for it; called only once, its seconds include the counter's
    overhead (the only measurement there is). Work done for the recorder outside its calls
    (joining held batches) is `charge`d as measured.
    """

    def __init__(self, device: torch.device, sample_every: int = 1) -> None:
        self.watch = Stopwatch(device)
        self.first = Stopwatch(device)  # the FLOP-counted execution
        self.sample_every = sample_every
        self.flops_per_unit: float | None = None
        self.first_units = 0.0
        self.first_extra = False  # the counted execution was an extra one (a repeatable recorder)
        self.calls = 0
        self.units = 0.0
        self.timed_units = 0.0
        self.charged = Stopwatch(device)

    def charge(self, watch: Stopwatch) -> None:
        """Bill this recorder what `watch` measured, on top of its own calls."""
        self.charged.include(watch)

    def run(self, fn: Callable[[], None], units: float = 1.0, repeatable: bool = False) -> None:
        """Call `fn`, `units` units of work; `repeatable`: the recorder's declaration (`Recorder.repeatable`)."""
        if self.flops_per_unit is None:
            self._count(fn, units, repeatable)
        elif self.calls % self.sample_every == 0:
            self._timed(fn, units)
        else:
            fn()
        self.calls += 1
        self.units += units

    def _count(self, fn: Callable[[], None], units: float, repeatable: bool) -> None:
        """The first call: counted, then (when the recorder allows it) executed again, timed."""
        sink: list[int] = []
        with self.first.measure(), count_flops(sink):
            fn()
        self.flops_per_unit = sink[0] / units
        self.first_units = units
        self.first_extra = repeatable
        if repeatable:
            self._timed(fn, units)

    def _timed(self, fn: Callable[[], None], units: float) -> None:
        with self.watch.measure():
            fn()
        self.timed_units += units

    def _rate(self) -> float:
        """Seconds per unit of work: of the timed executions; without any (a recorder that is not
        repeatable, called fewer than `sample_every` times), of the counted one, counter included."""
        if self.timed_units:
            return self.watch.seconds() / self.timed_units
        return self.first.seconds() / self.first_units if self.first_units else 0.0

    def seconds(self) -> float:
        """Every call's units at the measured rate: the recorder's own time, its counting excluded."""
        return self._rate() * self.units + self.charged.seconds()

    def clock_seconds(self) -> float:
        """Seconds these calls spent inside an enclosing clock (the FLOP-counted execution at its
        measured, counter-inflated time), to take them out of that clock."""
        if not self.timed_units:
            return self._rate() * self.units
        rest = self.units - (0.0 if self.first_extra else self.first_units)
        return self.first.seconds() + self._rate() * rest

    def flops(self) -> int:
        return int(round((self.flops_per_unit or 0.0) * self.units))

    def state(self) -> dict:
        return {"seconds": self.watch.seconds(), "first": self.first.seconds(), "calls": self.calls,
                "first_units": self.first_units, "first_extra": self.first_extra,
                "flops_per_unit": self.flops_per_unit, "units": self.units, "timed_units": self.timed_units,
                "charged": self.charged.seconds()}

    def load(self, state: dict) -> None:
        self.watch.add(state["seconds"])
        self.first.add(state["first"])
        self.flops_per_unit = state["flops_per_unit"]
        self.calls, self.units, self.timed_units = state["calls"], state["units"], state["timed_units"]
        self.first_units = state["first_units"]
        self.first_extra = state.get("first_extra", False)  # absent from checkpoints of older versions
        self.charged.add(state.get("charged", 0.0))  # absent from checkpoints of older versions


def warm_up_flop_counter() -> None:
    """FlopCounterMode's first use pays a one-off setup cost; pay it before anything is timed."""
    with FlopCounterMode(display=False):
        torch.ones(2, 2) @ torch.ones(2, 2)
