"""Tasks turn proxy scores into tidy metric rows against some ground truth.

A task lists its settings (which corrupted dataset, which seed), may need runs of its own (a
memorization reference), and evaluates every proxy's scores in a setting into rows
(task, setting, proxy, metric, value, seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.metrics import detection_metrics
from harness.prepared import PreparedData
from harness.runspec import DataSpec, RunSpec
from harness.store import StoredRun
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


Row = dict[str, object]


class Task:
    name: ClassVar[str]
    description: ClassVar[str]

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, n_train: int) -> list[Setting]:
        raise NotImplementedError

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        """Runs the task itself needs beyond the proxies' (e.g. a memorization reference)."""
        return []

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        raise NotImplementedError


def detection_rows(positives: np.ndarray, scores: dict[str, np.ndarray], metrics: tuple[str, ...]) -> list[Row]:
    """Rows of detection metrics (harness.metrics) of every proxy against a ground-truth mask."""
    rows: list[Row] = []
    for proxy, s in scores.items():
        values = detection_metrics(positives, s)
        rows += [{"proxy": proxy, "metric": m, "value": values[m]} for m in metrics]
    return rows


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def make_tasks(names: tuple[str, ...]) -> list[Task]:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise HarnessError(f"unknown task(s) {unknown}; valid tasks: {', '.join(TASKS)}")
    if not names:
        raise HarnessError(f"no tasks selected; pass --tasks with some of: {', '.join(TASKS)}")
    return [TASKS[n]() for n in names]
