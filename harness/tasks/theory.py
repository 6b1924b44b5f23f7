"""Theory validation (paper Figs. 3-8, 11-15): the relations the CSL paper's bounds predict.

On the clean setting of each seed it draws, as bin means ± std over equal-width bins of the
x-axis quantity ("Y vs X" puts X on the x-axis):
- learning time vs memorization, CSL vs learning time, CSL vs memorization;
- histograms of CSL and learning time (bimodality, long tail);
- the highest- and lowest-CSL training images of every class.
Memorization is the experiment's reference (``--reference``, shared with the memorization task
and its runs); CSL and learning time are the scores of the ``csl`` and ``learning_time`` proxies,
so a figure whose proxy was not selected is skipped, with a row that says so.

Figures go to ``<out>/figures`` and their paths (relative to ``<out>``) to
``<out>/figures/index.json``. Rows: per relation the sample-level Spearman and the Spearman of
the bin means against the bin centers (``binned_spearman``: is the trend monotone?); per
histogram the skewness and Sarle's bimodality coefficient (> 5/9 suggests two modes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.io import atomic_write_text
from harness.plots import binned_relation, plot_binned, plot_extreme_images, plot_histogram
from harness.runspec import DataSpec, RunSpec
from harness.tasks.base import EvalContext, Row, Setting, Task, register_task
from harness.tasks.memorization import clean_settings, reference_needs, reference_scores
from proxies.base import Need

DEFAULTS: dict[str, Any] = {"bins": 20, "per_class": 5}
QUANTITIES = {"csl": "CSL", "learning_time": "learning time", "memorization": "memorization"}
RELATIONS = (("learning_time", "memorization"), ("csl", "learning_time"), ("csl", "memorization"))  # (y, x)
NOT_SELECTED = "skipped_proxy_not_selected"


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient with the sample skewness and excess kurtosis (bias-corrected);
    5/9 is its value for a uniform distribution, larger values suggest bimodality."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = v.size
    if n < 4 or np.all(v == v[0]):
        return float("nan")
    g = stats.skew(v, bias=False)
    k = stats.kurtosis(v, bias=False)
    return float((g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def _params(cfg: ExperimentConfig) -> dict[str, int]:
    args = dict(cfg.task_args.get("theory", {}))
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise HarnessError(f"task theory has no parameter(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **args}
    for key, value in p.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HarnessError(f"theory.{key} must be a positive integer, got {value!r}")
    return p


@register_task
class Theory(Task):
    name = "theory"
    description = "binned relations of learning time, CSL and memorization, histograms, extreme images (figures)"

    def __init__(self) -> None:
        self.figures: list[str] = []

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, n_train: int) -> list[Setting]:
        _params(cfg)
        return clean_settings(self.name, cfg, base_data)

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        return reference_needs(cfg, base)

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        p = _params(ctx.config)
        out = Path(ctx.config.out)
        tag = f"seed{ctx.setting.seed}"
        values: dict[str, np.ndarray] = {k: scores[k] for k in ("csl", "learning_time") if k in scores}
        values["memorization"] = reference_scores(ctx)[0].scores
        rows: list[Row] = []
        figures: list[Path] = []
        for y, x in RELATIONS:
            label = f"{y} vs {x}"
            missing = [q for q in (y, x) if q not in values]
            if missing:
                rows.append({"proxy": label, "metric": NOT_SELECTED, "value": float("nan")})
                continue
            table = binned_relation(values[x], values[y], bins=p["bins"])
            rows.append({"proxy": label, "metric": "spearman", "value": _spearman(values[x], values[y])})
            rows.append({"proxy": label, "metric": "binned_spearman",
                         "value": _spearman(table["bin_center"].to_numpy(), table["mean"].to_numpy())})
            figures.append(plot_binned(values[x], values[y], QUANTITIES[x], QUANTITIES[y],
                                       out / "figures" / f"{y}_vs_{x}_{tag}.png", bins=p["bins"]))
        for q in ("csl", "learning_time"):
            if q not in values:
                rows.append({"proxy": f"{q} histogram", "metric": NOT_SELECTED, "value": float("nan")})
                continue
            rows.append({"proxy": q, "metric": "skewness", "value": float(stats.skew(values[q], nan_policy="omit"))})
            rows.append({"proxy": q, "metric": "bimodality_coefficient", "value": bimodality_coefficient(values[q])})
            figures.append(plot_histogram(values[q], QUANTITIES[q], out / "figures" / f"{q}_histogram_{tag}.png"))
        if "csl" in values:
            figures.append(plot_extreme_images(
                ctx.data.x.cpu().numpy(), ctx.data.labels, values["csl"], list(ctx.data.dataset.classes),
                out / "figures" / f"csl_extremes_{tag}.png", per_class=p["per_class"]))
        else:
            rows.append({"proxy": "csl extreme images", "metric": NOT_SELECTED, "value": float("nan")})
        self.figures += [str(f.relative_to(out)) for f in figures]
        atomic_write_text(out / "figures" / "index.json", json.dumps({"figures": self.figures}, indent=1))
        return rows
