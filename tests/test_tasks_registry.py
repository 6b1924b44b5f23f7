"""Tasks register through `harness.registry.Registry` like proxies: a second task under a taken name
is an error, and third-party tasks come in through the `memprox.tasks` entry-point group (a broken
one, or one named like a built-in, warns and is ignored)."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import numpy as np
import pytest

from harness.config import ExperimentConfig
from harness.registry import Registry
from harness.runspec import DataSpec
from harness.tasks import TASKS, Setting, Task, base, make_tasks, register_task


class PluginTask(Task):
    name = "plugin_task"
    description = "a task from another package"

    def settings(self, cfg, base_data, dataset):
        return [Setting(self.name, f"n={dataset.n_train}", base_data, seed) for seed in cfg.seeds]

    def evaluate(self, ctx, scores):
        return [{"proxy": p, "metric": "mean", "value": float(np.mean(s))} for p, s in scores.items()]


def test_tasks_are_a_registry_and_a_taken_name_is_an_error() -> None:
    assert isinstance(TASKS, Registry)
    assert list(TASKS) == ["cost", "duplicates", "memorization", "mislabeled", "privacy", "suspects", "theory"]

    class Impostor(PluginTask):
        name = "mislabeled"

    with pytest.raises(ValueError, match="task 'mislabeled' is already registered"):
        register_task(Impostor)
    assert TASKS["mislabeled"].__module__ == "harness.tasks.mislabeled"
    with pytest.raises(TypeError, match="non-empty `description`"):
        register_task(type("Nameless", (Task,), {"name": "nameless", "description": ""}))


@pytest.fixture
def plugins(monkeypatch, fresh_tasks):
    """Entry points of the memprox.tasks group as the test sets them, into a copy of the registry."""
    module = types.ModuleType("fake_task_plugin")
    module.PluginTask = PluginTask

    class Mislabeled(PluginTask):
        name = "mislabeled"

    module.Mislabeled = Mislabeled
    monkeypatch.setitem(sys.modules, "fake_task_plugin", module)
    monkeypatch.setattr(base, "_plugins_loaded", False)

    def install(*entry_points: tuple[str, str]) -> Registry:
        eps = [importlib.metadata.EntryPoint(n, v, base.ENTRY_POINT_GROUP) for n, v in entry_points]
        monkeypatch.setattr(importlib.metadata, "entry_points",
                            lambda group: eps if group == base.ENTRY_POINT_GROUP else [])
        return fresh_tasks

    return install


def test_a_plugin_task_registers_through_its_entry_point(plugins) -> None:
    registry = plugins(("plugin_task", "fake_task_plugin:PluginTask"), ("broken", "no_such_module_xyz:Nope"))
    with pytest.warns(UserWarning, match="task plugin 'broken'.*failed to load"):
        (task,) = make_tasks(["plugin_task"])
    assert registry["plugin_task"] is PluginTask and isinstance(task, PluginTask)
    (setting,) = task.settings(ExperimentConfig(seeds=(3,)), DataSpec(), types.SimpleNamespace(n_train=7))
    assert (setting.label, setting.seed) == ("n=7", 3)


def test_a_plugin_named_like_a_builtin_task_is_ignored(plugins) -> None:
    registry = plugins(("mislabeled", "fake_task_plugin:Mislabeled"))
    with pytest.warns(UserWarning, match="named 'mislabeled' like harness.tasks.mislabeled.Mislabeled"):
        make_tasks(["mislabeled"])
    assert registry["mislabeled"].__module__ == "harness.tasks.mislabeled"
