"""Cost (paper Table 5): each proxy's measured FLOPs and seconds, absolute and relative to one
plain training run. It reuses the runs of the first other selected task's first setting label;
alone, it trains one clean base run per seed (a store holding only mislabeled or duplicates runs
lacks them). The base run is the task's own need: the denominator of every ratio, trained even
when no selected proxy reads it (ssft or confident_learning alone train only their own runs).
Nothing trains to be timed: training and recorder costs are those in the runs' manifests, measured
when each run trained (docs/experiments.md, "Growing an experiment")."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from harness.config import ExperimentConfig
from harness.cost import proxy_cost
from harness.datasets import Dataset
from harness.manifest import METER_VERSION
from harness.runspec import DataSpec, RunSpec
from harness.tasks.base import EvalContext, Row, Setting, Task, register_task
from harness.tasks.reference import ReferenceConfig
from proxies.base import Need


@register_task
class Cost(Task):
    name = "cost"
    headline = "seconds_rel"
    description = "measured FLOPs and wall seconds of each proxy, absolute and relative to plain training"

    def __init__(self, reference: ReferenceConfig | None = None, **params: Any) -> None:
        super().__init__(reference, **params)
        self.source: Task | None = None

    def bind(self, tasks: list[Task]) -> None:
        self.source = next((t for t in tasks if not isinstance(t, Cost)), None)

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        if self.source is not None:
            settings = self.source.settings(cfg, base_data, dataset)
            first = settings[0].label
            return [Setting(self.name, s.label, s.data, s.seed) for s in settings if s.label == first]
        return [Setting(self.name, "clean", base_data, seed) for seed in cfg.seeds]

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        """The plain base run, without recorders: the "1x" every ratio divides by."""
        return [Need(base, frozenset())]

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        warn_older_meters([run.manifest.meter for run in ctx.runs.values()])
        rows = []
        for proxy in ctx.proxies:
            if proxy.label not in scores:
                continue
            for metric, value in proxy_cost(proxy, ctx.base, ctx.runs).items():
                rows.append({"proxy": proxy.label, "metric": metric, "value": value})
        return rows


def warn_older_meters(meters: list[int]) -> None:
    """Runs reused from a store keep the seconds measured when they trained: a table mixing runs
    timed the older way (a one-call recorder's seconds with the FLOP counter's overhead in them)
    with new ones compares unlike numbers, so say so and how to get a clean table."""
    old = sum(m < METER_VERSION for m in meters)
    if old:
        warnings.warn(f"cost: {old} of the {len(meters)} runs read were stored by a memprox before 2 December 2026, "
                      "which timed a recorder called once per run (the final eval pass of final_loss and "
                      "in_confidence) with the FLOP counter's overhead: their seconds read high, FLOPs are alike; "
                      "for a cost table, run with --store on a fresh folder", UserWarning, stacklevel=2)
