"""Whether the figures an experiment will draw can be drawn: an MPLBACKEND matplotlib does not know
made its import raise after training, losing every output, so it is refused before the first run."""

from __future__ import annotations

import os
from collections.abc import Iterable

from harness.errors import HarnessError


def check_figure_backend(tasks: Iterable[str]) -> None:
    """A task that draws figures imports matplotlib after training, and matplotlib's import raises
    ValueError for an MPLBACKEND it does not know (`qt4agg`, gone since matplotlib 3.5; a typo): the
    run ended in a traceback with every output lost. Checked now, only when MPLBACKEND is set and a
    task selected writes figures/ (memprox draws with Agg itself, so any backend matplotlib knows works),
    into an --out (the caller checks: without one, as `run_experiment`'s default, nothing is drawn)."""
    backend = os.environ.get("MPLBACKEND")
    if not backend:  # matplotlib reads it only when set and not empty
        return
    from harness.tasks import TASKS

    drawing = [t for t in tasks if t in TASKS and "figures" in TASKS[t].folders]  # an unknown name: refused later
    if not drawing:
        return
    try:
        import matplotlib  # noqa: F401  (its import sets the backend from MPLBACKEND)
    except ValueError as e:
        raise HarnessError(f"MPLBACKEND={backend!r} is not a backend the installed matplotlib knows; the "
                           f"{', '.join(drawing)} task{'s' * (len(drawing) > 1)} import{'s' * (len(drawing) == 1)} "
                           "matplotlib after training to draw figures, which would fail there: unset MPLBACKEND "
                           "(memprox draws with Agg and needs none) or set MPLBACKEND=agg") from e
