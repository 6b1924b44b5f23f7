"""Memorization similarity (paper Tables 1 and 4): each proxy against a memorization reference.

The reference is chosen with ``--reference``:
- ``stability`` (default): Feldman & Zhang's estimator from K models, each trained on a random
  fraction r of the clean training set (``--task-arg memorization.k=128``, ``.fraction=0.7``,
  ``.variant=correct|prob``, ``.model=NAME`` to train the K models with another architecture
  than the proxies' runs). The K runs are ordinary store entries, so a second experiment
  reuses them, and the planner trains them as one batched ensemble when the model allows it.
- ``fz:PATH`` / ``cscore:PATH``: a published score file, checked against the dataset's clean
  labels while planning, so a misaligned file stops the experiment before anything trains.

Metrics per proxy: cosine, Pearson, Spearman on all samples and on the top-k samples by the
reference (``.top_k``, default 10% of N). Rows under proxy "reference" describe the reference's
own noise: its mean per-sample standard error and the split-half Pearson between the estimates
of the even- and odd-numbered models (a ceiling on any proxy's Pearson), and for stability its
measured cost (``reference_flops``, ``reference_seconds`` and both relative to one plain run).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from baselines.references import Reference, load_cscore, load_fz
from baselines.stability import EVAL_LAST, VARIANTS, split_half_pearson, stability_matrix, stability_specs
from baselines.stability import stability_memorization as _stability
from harness.config import ExperimentConfig
from harness.cost import cost_row, run_cost
from harness.errors import HarnessError
from harness.models import MODELS
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.similarity import similarity_metrics
from harness.tasks.base import EvalContext, Row, Setting, Task, register_task
from proxies.base import Need

#: K = 128 (~38 out-of-subset models per sample at r = 0.7). On digits with the quick preset the
#: estimates of two disjoint halves of the models correlate 0.97 at K = 128 (0.91 at K = 64, 0.88
#: at K = 32), i.e. a reliability of ~0.98, so the reference's own noise barely dents a proxy's
#: Pearson; the 128 models train as a batched ensemble in ~30 s per seed on 2 CPU cores.
DEFAULTS: dict[str, Any] = {"k": 128, "fraction": 0.7, "variant": "correct", "top_k": None, "model": None}
LOADERS = {"fz": load_fz, "cscore": load_cscore}


@dataclass(frozen=True)
class ReferenceConfig:
    """What `--reference` and `--task-arg memorization.*` ask for, validated."""

    kind: str  # "stability" | "fz" | "cscore"
    path: str = ""
    k: int = DEFAULTS["k"]
    fraction: float = DEFAULTS["fraction"]
    variant: str = DEFAULTS["variant"]
    top_k: int | None = DEFAULTS["top_k"]
    model: str | None = None  # the stability models' architecture; None: the proxies' model

    def label(self) -> str:
        return "stability" if self.kind == "stability" else f"{self.kind}:{Path(self.path).name}"


def reference_config(cfg: ExperimentConfig) -> ReferenceConfig:
    args = dict(cfg.task_args.get("memorization", {}))
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise HarnessError(f"task memorization has no parameter(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **args}
    if isinstance(p["k"], bool) or not isinstance(p["k"], int) or p["k"] < 2:
        raise HarnessError(f"memorization.k must be an integer >= 2 (models to train), got {p['k']!r}")
    if isinstance(p["fraction"], bool) or not isinstance(p["fraction"], (int, float)) or not 0 < p["fraction"] < 1:
        raise HarnessError(f"memorization.fraction must be a number in (0, 1), got {p['fraction']!r}")
    if p["variant"] not in VARIANTS:
        raise HarnessError(f"memorization.variant must be one of {', '.join(VARIANTS)}, got {p['variant']!r}")
    top_k = p["top_k"]
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise HarnessError(f"memorization.top_k must be a positive integer, got {top_k!r}")
    model = p["model"]
    if model is not None and model not in MODELS:
        raise HarnessError(f"memorization.model {model!r} is not a registered model; "
                           f"valid: {', '.join(sorted(MODELS))}")
    kind, _, path = cfg.reference.partition(":")
    if kind == "stability" and not path:
        return ReferenceConfig("stability", "", p["k"], float(p["fraction"]), p["variant"], top_k, model)
    if kind in LOADERS and path:
        return ReferenceConfig(kind, path, p["k"], float(p["fraction"]), p["variant"], top_k, model)
    raise HarnessError(f"unknown --reference {cfg.reference!r}; use stability, fz:PATH or cscore:PATH")


@lru_cache(maxsize=4)
def _clean_labels(dataset: str, data_root: Path | None, subset: int | None) -> np.ndarray:
    """The dataset's clean training labels, for checking a score file while planning (the
    experiment's own copy is not handed to tasks at that point; the loaders cache to disk)."""
    from harness.data import load_dataset

    return load_dataset(dataset, data_root=data_root, download=False, subset=subset).y_train.numpy()


def _load_file(rc: ReferenceConfig, labels: np.ndarray) -> Reference:
    return LOADERS[rc.kind](rc.path, labels)


def clean_settings(task: str, cfg: ExperimentConfig, base_data: DataSpec) -> list[Setting]:
    """One clean setting per seed, shared by the memorization and theory tasks (and so are the
    base runs, proxy scores and the reference's runs)."""
    rc = reference_config(cfg)
    if rc.kind != "stability":  # a bad file is bad input: fail before anything trains
        _load_file(rc, _clean_labels(cfg.dataset, cfg.data_root, cfg.subset))
    data = replace(base_data, corruption=Corruption())
    return [Setting(task, "clean", data, seed) for seed in cfg.seeds]


def reference_base(rc: ReferenceConfig, base: RunSpec) -> RunSpec:
    """The run the stability models derive from: the proxies' base run, or the same data, recipe
    and seed with another architecture (the paper's reference came from ResNet-50s while its
    proxies came from ResNet-18s; a batch-norm-free model lets the K models train batched)."""
    return base if rc.model is None else replace(base, model=rc.model)


def reference_needs(cfg: ExperimentConfig, base: RunSpec) -> list[Need]:
    rc = reference_config(cfg)
    if rc.kind != "stability":
        return []
    specs = stability_specs(reference_base(rc, base), rc.k, rc.fraction)
    return [Need(spec, frozenset({EVAL_LAST})) for spec in specs]


def reference_scores(ctx: EvalContext) -> tuple[Reference, float]:
    """The setting's reference and, for stability, its split-half Pearson (NaN otherwise)."""
    rc = reference_config(ctx.config)
    if rc.kind != "stability":
        return _load_file(rc, ctx.data.y_clean), float("nan")
    matrix, masks = stability_matrix(ctx.runs, reference_base(rc, ctx.base), rc.k, rc.fraction, rc.variant)
    return _stability(matrix, masks), split_half_pearson(matrix, masks)


@register_task
class Memorization(Task):
    name = "memorization"
    description = "similarity of each proxy to a memorization reference (cosine, Pearson, Spearman; all and top-k)"

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, n_train: int) -> list[Setting]:
        return clean_settings(self.name, cfg, base_data)

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        return reference_needs(cfg, base)

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        rc = reference_config(ctx.config)
        reference, split_half = reference_scores(ctx)
        rows: list[Row] = []
        for proxy, s in scores.items():
            for metric, value in similarity_metrics(s, reference.scores, rc.top_k).items():
                rows.append({"proxy": proxy, "metric": metric, "value": value})
        if reference.stderr is not None:
            rows.append({"proxy": "reference", "metric": "reference_mean_stderr",
                         "value": float(np.nanmean(reference.stderr))})
        if np.isfinite(split_half):
            rows.append({"proxy": "reference", "metric": "reference_split_half_pearson", "value": split_half})
        if rc.kind == "stability":
            for metric, value in reference_cost(rc, ctx).items():
                rows.append({"proxy": "reference", "metric": f"reference_{metric}", "value": value})
        return rows


def reference_cost(rc: ReferenceConfig, ctx: EvalContext) -> dict[str, float]:
    """Measured FLOPs and seconds of the K stability models (training and final eval pass), and
    their ratio to the base run's plain training: the paper's Table 5 row for stability, at the
    K used. Seconds of batched members are their share of the ensemble's wall time."""
    flops = seconds = 0.0
    for spec in stability_specs(reference_base(rc, ctx.base), rc.k, rc.fraction):
        f, sec = run_cost(ctx.runs[spec], {EVAL_LAST.key}, include_training=True)
        flops, seconds = flops + f, seconds + sec
    return cost_row(flops, seconds, ctx.runs[ctx.base])
