"""Task registry; every module in this package is imported so its task registers."""

import importlib
import pkgutil

from harness.tasks.base import TASKS, EvalContext, Row, Setting, Task, make_tasks, register_task

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["TASKS", "EvalContext", "Row", "Setting", "Task", "make_tasks", "register_task"]
