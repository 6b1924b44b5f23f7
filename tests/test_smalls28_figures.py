"""smalls28: whether a task's figures need image data is the task's to declare (`Task.figures_need_images`), beside
the `folders` it writes: harness.config_figures named suspects in a tuple of its own, and a plugin task that draws
pictures of samples only on images had no way to say so (an unknown MPLBACKEND refused it on a table, where it
draws nothing)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def pictures_task() -> Iterator[type]:
    """A plugin-like task that writes figures/ of samples on image data only, registered for the test."""
    from harness.tasks import TASKS, Task, register_task

    class Pictures(Task):
        name = "smalls28-pictures"
        description = "draws samples, on images only"
        folders = ("figures",)
        figures_need_images = True

    register_task(Pictures)
    try:
        yield Pictures
    finally:
        TASKS.remove(Pictures.name)


def _checks_backend(tasks: tuple[str, ...], images: bool | None) -> bool:
    """Whether check_figure_backend imports matplotlib for `tasks` (made to raise ImportError by the caller)."""
    from harness.config_figures import check_figure_backend

    try:
        check_figure_backend(tasks, images=images)
    except ImportError:
        return True
    return False


def test_a_task_that_declares_image_only_figures_is_checked_on_images_only(pictures_task, monkeypatch) -> None:
    from harness.config_figures import images_only
    from harness.tasks import TASKS, Task

    monkeypatch.setenv("MPLBACKEND", "qt4agg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError: a check imported it
    assert Task.figures_need_images is False and images_only(pictures_task)
    assert [name for name in TASKS if images_only(TASKS[name])] == ["suspects", pictures_task.name]
    assert [_checks_backend((pictures_task.name,), images) for images in (None, False, True)] == [False, False, True]
    pictures_task.figures_need_images = False  # the default: it may draw on any data, checked before the data load
    assert [_checks_backend((pictures_task.name,), images) for images in (None, False, True)] == [True, True, True]


def test_only_suspects_among_the_built_in_tasks_draws_on_images_only() -> None:
    """suspects tests `dataset.is_image` before drawing (its samples and its pairs); theory and privacy draw on any
    data. Every other built-in task keeps the base's False."""
    from harness.config_figures import images_only
    from harness.tasks import TASKS

    drawing = {name: images_only(TASKS[name]) for name in TASKS if "figures" in TASKS[name].folders}
    assert drawing == {"privacy": False, "suspects": True, "theory": False}


def test_figures_need_images_must_be_a_bool() -> None:
    from harness.tasks import TASKS, Task, register_task

    class Odd(Task):
        name = "smalls28-odd"
        description = "a flag that is no flag"
        figures_need_images = "yes"  # type: ignore[assignment]

    with pytest.raises(TypeError, match="`figures_need_images` is True or False, got 'yes'"):
        register_task(Odd)
    assert "smalls28-odd" not in TASKS
