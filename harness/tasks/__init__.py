"""Task registry; every module in this package is imported so its task registers, then the tasks of
other packages (the `memprox.tasks` entry-point group) are loaded."""

import importlib
import pkgutil

from harness.tasks.base import (
    ENTRY_POINT_GROUP,
    TASKS,
    EvalContext,
    Row,
    Setting,
    Task,
    load_plugins,
    make_tasks,
    register_task,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")
load_plugins()

__all__ = ["ENTRY_POINT_GROUP", "TASKS", "EvalContext", "Row", "Setting", "Task", "load_plugins", "make_tasks",
           "register_task"]
