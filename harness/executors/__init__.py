"""Executors are plugins: each lives in its own module, registers itself here, and is found by its
--executor name. Built-ins: `local` (a pool of worker processes on this machine, the default),
`ray` (a local Ray or a cluster) and `inprocess` (this process, for debugging and tests).

Other packages add executors through the `memprox.executors` entry-point group, e.g.
`[project.entry-points."memprox.executors"] dask = "my_pkg.dask_executor:DaskExecutor"`; the
entry point names an `Executor` subclass (see `harness.executors.base`).

Names are known without importing anything heavy (the CLI lists them in --help): a built-in's
module, and a plugin, are imported only when that executor is asked for.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.executors.base import (
    MAX_RETRIES,
    Executor,
    JobFn,
    JobPlacement,
    Outcome,
    WorkersLost,
    progress_bar,
)
from harness.registry import Registry, installed_plugins, load_failure

if TYPE_CHECKING:
    from harness.config import ExperimentConfig

__all__ = ["EXECUTORS", "MAX_RETRIES", "Executor", "JobFn", "JobPlacement", "Outcome", "WorkersLost",
           "executor_class", "executor_names", "make_executor", "progress_bar", "register_executor",
           "validate_executor"]

ENTRY_POINT_GROUP = "memprox.executors"
EXECUTORS: Registry[type[Executor]] = Registry("executor")
#: Built-in executors by name -> the module that registers it (imported on first use).
BUILTIN = {"local": "harness.executors.local", "ray": "harness.executors.ray",
           "inprocess": "harness.executors.inprocess"}
#: Config fields only some executors read (None unless given) -> (flag, the built-ins that read it).
EXECUTOR_OPTIONS = {"workers": ("--workers", "local or --executor ray"), "ray_address": ("--ray-address", "ray"),
                    "job_timeout": ("--job-timeout", "local or --executor ray, whose jobs run in worker processes "
                                    "that can be stopped (a job in this process cannot stop itself)")}


def register_executor(cls: type[Executor]) -> type[Executor]:
    """Class decorator: a second executor under a taken name is an error, not a silent overwrite."""
    for attr in ("name", "description"):
        if not getattr(cls, attr, None):
            raise TypeError(f"executor {cls.__name__} must declare a non-empty `{attr}`")
    EXECUTORS.register(cls.name, cls)
    return cls


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed executor plugins by name; one named like a built-in is ignored with a warning."""
    found, withheld = installed_plugins(ENTRY_POINT_GROUP, "executor")
    EXECUTORS.withheld.update(withheld)
    for name, ep in list(found.items()):
        if name in BUILTIN:
            warnings.warn(f"executor plugin {ep.name!r} ({ep.value}) is named like a built-in executor; ignored")
            del found[name]
    return found


def executor_names() -> list[str]:
    """Every executor --executor accepts: built-ins, registered ones and installed plugins."""
    return sorted(set(BUILTIN) | set(EXECUTORS) | set(_entry_points()))


def executor_class(name: str) -> type[Executor]:
    """The executor class for `name`, importing its module (or plugin) on first use; HarnessError
    for an unknown name or a plugin that does not load."""
    if name not in EXECUTORS:
        if name in BUILTIN:
            importlib.import_module(BUILTIN[name])
        elif (ep := _entry_points().get(name)) is not None:
            _load_plugin(ep)
    EXECUTORS.check_claimed_once(name)
    if name not in EXECUTORS:
        raise HarnessError(f"unknown executor {name!r} (--executor); valid: {', '.join(executor_names())}")
    return EXECUTORS[name]


def _load_plugin(ep: importlib.metadata.EntryPoint) -> None:
    try:
        cls = ep.load()
    except (Exception, SystemExit) as e:  # the plugin's import error (or a `sys.exit()` there), in one line
        raise HarnessError(load_failure(f"executor plugin {ep.name!r} ({ep.value})", e)) from e
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise HarnessError(f"executor plugin {ep.name!r} ({ep.value}) is not a harness.executors.Executor subclass")
    if ep.name not in EXECUTORS:  # the module may have registered it itself
        EXECUTORS.register(ep.name, cls)


def validate_executor(cfg: ExperimentConfig) -> None:
    """The executor exists, no other executor's option is set, and its own options are valid."""
    cls = executor_class(cfg.executor)
    for field, (flag, users) in EXECUTOR_OPTIONS.items():
        if getattr(cfg, field) is not None and field not in cls.options:
            raise HarnessError(f"{flag} is not an option of --executor {cfg.executor}; it is one of --executor "
                               f"{users}")
    cls.validate(cfg)


def make_executor(cfg: ExperimentConfig) -> Executor:
    """The executor `cfg.executor` names, built from the (validated) config."""
    return executor_class(cfg.executor).from_config(cfg)
