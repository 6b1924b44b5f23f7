"""Whether the figures an experiment will draw can be drawn: an MPLBACKEND matplotlib does not know
made its import raise after training, losing every output, so it is refused before the first run."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:  # harness.tasks imports harness.config, which imports this module
    from harness.tasks import Task


def images_only(task: type[Task]) -> bool:
    """Whether `task` draws figures only for image data (`Task.figures_need_images`): the other tasks that write
    figures/ (theory's relations, privacy's curves) draw on any data, and so does a plugin's unless it says."""
    return task.figures_need_images


def check_figure_backend(tasks: Iterable[str], images: bool | None = None) -> None:
    """A task that draws figures imports matplotlib after training, and matplotlib's import raises
    ValueError for an MPLBACKEND it does not know (`qt4agg`, gone since matplotlib 3.5; a typo): the
    run ended in a traceback with every output lost. Checked now, only when MPLBACKEND is set and a
    task selected will draw (memprox draws with Agg itself, so any backend matplotlib knows works),
    into an --out (the caller checks: without one, as `run_experiment`'s default, nothing is drawn).
    `images`: whether the data are images; None before they are loaded, when only the tasks that draw
    on any data count (`validate`), and `validate_for_data` asks again with the data: `--tasks suspects`
    on an `npz:` table draws nothing and was refused."""
    backend = os.environ.get("MPLBACKEND")
    if not backend:  # matplotlib reads it only when set and not empty
        return
    from harness.tasks import TASKS

    drawing = [t for t in tasks if t in TASKS and "figures" in TASKS[t].folders  # an unknown name: refused later
               and (images or not images_only(TASKS[t]))]
    if not drawing:
        return
    try:
        import matplotlib  # noqa: F401  (its import sets the backend from MPLBACKEND)
    except ValueError as e:
        raise HarnessError(f"MPLBACKEND={backend!r} is not a backend the installed matplotlib knows; the "
                           f"{', '.join(drawing)} task{'s' * (len(drawing) > 1)} import{'s' * (len(drawing) == 1)} "
                           "matplotlib after training to draw figures, which would fail there: unset MPLBACKEND "
                           "(memprox draws with Agg and needs none) or set MPLBACKEND=agg") from e
