"""Tasks turn proxy scores into tidy metric rows against some ground truth.

A task lists its settings (which corrupted dataset, which seed), may need runs of its own (a
memorization reference), and evaluates every proxy's scores in a setting into rows
(task, setting, proxy, metric, value, seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from harness.bootstrap import Resamples
from harness.config import ExperimentConfig
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.io import atomic_write
from harness.metrics import detection_boot, detection_metrics
from harness.prepared import PreparedData
from harness.registry import Registry, check_selectable_name, did_you_mean, load_class_plugins
from harness.runspec import DataSpec, RunSpec
from harness.store import StoredRun
from harness.tasks.reference import REFERENCE_DEFAULTS, ReferenceConfig, reference_config
from harness.values import leading_zero_hint
from proxies.base import Need, Proxy


@dataclass(frozen=True)
class Setting:
    task: str
    label: str  # e.g. "noise=0.05"
    data: DataSpec
    seed: int


@dataclass
class EvalContext:
    setting: Setting
    base: RunSpec
    data: PreparedData
    runs: Mapping[RunSpec, StoredRun]
    config: ExperimentConfig
    proxies: list[Proxy]
    out: Path | None = None  # where figures go; None: the task writes no files
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # files written, relative to out
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # a task's own tables, by their file name

    def keep_table(self, kind: str, name: str, table: pd.DataFrame) -> None:
        """A task's own table (the suspects ranking, a per-sample reference): kept in the result
        (`ExperimentResult.tables`, also without an out folder) and, with one, written as `name`."""
        self.tables[name] = table
        if self.out is not None:
            atomic_write(Path(self.out) / name, lambda path: table.to_csv(path, index=False))
            if name not in self.artifacts.setdefault(kind, []):
                self.artifacts[kind].append(name)

    def resamples(self) -> Resamples | None:
        """The setting's bootstrap resamples (config.bootstrap of them; None when 0), the same
        for every proxy and drawn from (task, setting, seed) so a rerun draws them again."""
        b = int(getattr(self.config, "bootstrap", 0) or 0)
        if b <= 0:
            return None
        return Resamples.draw(self.data.n, b, self.setting.task, self.setting.label, self.setting.seed)


Row = dict[str, object]


class Task:
    """Subclass, set the class attributes, implement `settings` (given the loaded dataset) and
    `evaluate`; register with `@register_task` (or the `memprox.tasks` entry-point group).
    Parameters (`--task-arg NAME.PARAM=VALUE`) are declared in `defaults`, checked once in the
    constructor (`validate`), and read from `self.params`. Tasks that compare against the
    memorization reference set `uses_reference` and read `self.reference`."""

    name: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    uses_reference: ClassVar[bool] = False
    #: The metric of the task's table in leaderboard.md and the CLI's printout; None: its rows are
    #: in leaderboard.csv only (a task of figures, as theory, has no one number to compare).
    headline: ClassVar[str | None] = None
    #: The folders of --out the task writes into: a file or link of that name there is refused before
    #: training (`harness.outputs.check_out`), not after the evaluation, when its outputs are published.
    folders: ClassVar[tuple[str, ...]] = ()
    #: Whether the task's figures are pictures of samples, drawn only for image data (`Dataset.is_image`, tested
    #: where it draws them): on a table it draws none, so an MPLBACKEND matplotlib does not know refuses it only
    #: once the data are known to be images (`harness.config_figures`). False: it may draw on any data.
    figures_need_images: ClassVar[bool] = False

    def __init__(self, reference: ReferenceConfig | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            close = did_you_mean(unknown, self.defaults)
            raise HarnessError(f"task {self.name!r} has no parameter(s) {unknown}{close}; valid: {valid}")
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.reference: ReferenceConfig | None = (reference or ReferenceConfig()) if self.uses_reference else None
        self.validate()

    def validate(self) -> None:
        """Raise HarnessError for a bad parameter value (called once, by the constructor)."""

    def bind(self, tasks: list[Task]) -> None:
        """Called once by make_tasks with every selected task (e.g. cost borrows a sibling's settings)."""

    def check_proxies(self, proxies: list[Proxy]) -> None:
        """Raise HarnessError when a parameter names a proxy that is not selected (before training)."""

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        raise NotImplementedError

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        """Runs the task itself needs beyond the proxies' (e.g. a memorization reference)."""
        return []

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        raise NotImplementedError


#: Bound on a task's count parameters (bins, samples per class): far above any use, so a mistyped
#: 2**40 is refused before training instead of becoming an allocation after it.
MAX_TASK_COUNT = 10_000


def positive_int(task: str, key: str, value: object, maximum: int = MAX_TASK_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HarnessError(f"{task}.{key} must be a positive integer, got {value!r}{leading_zero_hint(value)}")
    if value > maximum:
        raise HarnessError(f"{task}.{key} must be at most {maximum}, got {value}")
    return value


def detection_rows(
    positives: np.ndarray, scores: dict[str, np.ndarray], metrics: tuple[str, ...], resamples: Resamples | None = None
) -> list[Row]:
    """Rows of detection metrics (harness.metrics) of every proxy against a ground-truth mask,
    each with its bootstrap replicates under "boot" when resamples are given."""
    rows: list[Row] = []
    for proxy, s in scores.items():
        values = detection_metrics(positives, s)
        boot = detection_boot(positives, s, resamples) if resamples is not None else {}
        for m in metrics:
            row: Row = {"proxy": proxy, "metric": m, "value": values[m]}
            if m in boot:
                row["boot"] = boot[m]
            rows.append(row)
    return rows


#: Third-party tasks: the entry point names a Task subclass, e.g.
#: `[project.entry-points."memprox.tasks"] my_task = "my_pkg.module:MyTask"`.
ENTRY_POINT_GROUP = "memprox.tasks"
TASKS: Registry[type[Task]] = Registry("task")
_plugins_loaded = False


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator; a second task under a taken name is an error, not a silent overwrite."""
    for attr in ("name", "description"):
        if not getattr(cls, attr, None):
            raise TypeError(f"task {cls.__name__} must declare a non-empty `{attr}`")
    if cls.headline is not None and (not isinstance(cls.headline, str) or not cls.headline):
        raise TypeError(f"task {cls.__name__}: `headline` names one of its metrics (a str) or is None, "
                        f"got {cls.headline!r}")
    if not isinstance(cls.figures_need_images, bool):
        raise TypeError(f"task {cls.__name__}: `figures_need_images` is True or False, got {cls.figures_need_images!r}")
    check_selectable_name(cls, "task", "--tasks and --task-arg TASK.PARAM")
    TASKS.register(cls.name, cls)
    return cls


def load_plugins() -> None:
    """Register the tasks installed by other packages (once; `harness.tasks` calls it on import). A
    plugin that fails to load, is no Task, or takes a registered name warns and is ignored."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        load_class_plugins(ENTRY_POINT_GROUP, TASKS, Task, register_task)


def make_tasks(
    names: tuple[str, ...] | list[str],
    task_args: Mapping[str, Mapping[str, Any]] | None = None,
    reference: str = "stability",
) -> list[Task]:
    """The selected tasks, each built once with its `--task-arg` parameters, sharing one
    ReferenceConfig (from `--reference` and the `memorization.k|fraction|variant|model` args)
    among the tasks that use the reference. Bad names or parameters raise HarnessError."""
    load_plugins()
    names = list(names)
    task_args = {k: dict(v) for k, v in (task_args or {}).items()}
    valid = ", ".join(TASKS)
    if not names:
        raise HarnessError(f"no tasks selected; pass --tasks with some of: {valid}")
    for name in names:
        TASKS.check_claimed_once(name)
        TASKS.check_loaded(name)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise HarnessError(f"unknown task(s) {unknown}{did_you_mean(unknown, TASKS)}; valid tasks: {valid}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HarnessError(f"task(s) {repeated} selected more than once; list each task once in --tasks")
    for owner in task_args:
        if owner not in TASKS:
            raise HarnessError(f"--task-arg names unknown task {owner!r}{did_you_mean([owner], TASKS)}; valid tasks: "
                               f"{valid}")
    referencing = [n for n in names if TASKS[n].uses_reference]
    mem_args = task_args.get("memorization", {})
    ref_args = {k: v for k, v in mem_args.items() if k in REFERENCE_DEFAULTS}
    for owner in task_args:
        if owner in names:
            continue
        if owner == "memorization" and referencing:
            unknown = sorted(set(mem_args) - set(REFERENCE_DEFAULTS))
            if not unknown:
                continue  # the reference's settings, for theory/privacy without the memorization task
            raise HarnessError(f"the memorization reference has no parameter(s) {unknown} (the memorization task "
                               f"is not selected, so only its reference's apply); valid: "
                               f"{', '.join(REFERENCE_DEFAULTS)}")
        raise HarnessError(f"--task-arg names task {owner!r}, which is not among the selected tasks "
                           f"({', '.join(names)}); add it to --tasks or drop the argument")
    read = {name for n in referencing for name in getattr(TASKS[n], "reference_params", REFERENCE_DEFAULTS)}
    unread = sorted(set(ref_args) - read)
    if unread:
        raise HarnessError(f"memorization.{unread[0]} changes the memorization reference's values, which none of "
                           f"the selected tasks ({', '.join(referencing)}) reads (privacy reads the K models' "
                           "phi); add memorization to --tasks or drop the argument")
    rc = reference_config(reference, ref_args) if referencing else None
    tasks = [TASKS[n](reference=rc, **task_args.get(n, {})) for n in names]
    for task in tasks:
        task.bind(tasks)
    return tasks
