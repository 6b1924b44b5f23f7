"""The phases of an experiment, timed into summary.json's ``phase_seconds``, and the one-thread
BLAS that scoring and evaluation run under."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

#: The stages of a run, timed into summary.json's ``phase_seconds``: plan (checks, planning, the
#: corrupted data every run needs), load (the dataset, the store's cleanup and lookups), train
#: (training what the store lacks and storing it), score (every proxy's scores), evaluate (the
#: tasks, their figures included, and the leaderboard with its bootstrap), write (the output files).
PHASES = ("plan", "load", "train", "score", "evaluate", "write")


class PhaseTimer:
    """Wall seconds per phase (`PHASES`), summed over every stretch spent in it; `rounded` counts
    a stretch still open up to now (the summary is written from inside the write phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._open: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += max(0.0, seconds)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if phase in self._open:  # nested in the same phase: the outer stretch counts it
            yield
            return
        self._open[phase] = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - self._open.pop(phase))

    def rounded(self) -> dict[str, float]:
        now = time.perf_counter()
        return {k: round(v + (now - self._open[k] if k in self._open else 0.0), 3) for k, v in self.seconds.items()}


def single_blas_thread() -> AbstractContextManager[object]:
    """Scoring and evaluation run numpy's BLAS on one thread. Their matrices are small (B x N
    bootstrap weights), so a second thread gains little, while on a machine whose CPUs are busy a
    multi-threaded BLAS call waits for its parked threads: the bootstrap ran 2-3x slower with two
    threads than with one on two loaded cores. Results are the same bits either way (checked on
    the default run's outputs and in tests/test_phases.py), and no longer depend on how many
    cores the machine has."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it the default threads are kept
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def format_phases(phases: dict[str, float]) -> str:
    """One line: `phases: plan 0.1 s · load 0.8 s · train 120.3 s · ...`."""
    return "phases: " + " · ".join(f"{k} {v:.1f} s" for k, v in phases.items())
