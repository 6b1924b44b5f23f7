"""Theory validation (paper Figs. 3-8, 11-15): the relations the CSL paper's bounds predict.

On the clean setting of each seed it draws, as bin means ± std over equal-width bins of the
x-axis quantity ("Y vs X" puts X on the x-axis):
- learning time vs memorization, CSL vs learning time, CSL vs memorization;
- histograms of CSL and learning time (bimodality, long tail);
- the highest- and lowest-CSL training images of every class.
Memorization is the experiment's reference (``--reference``, shared with the memorization task
and its runs); CSL and learning time are the scores of the ``csl`` and ``learning_time`` proxies
-- ``theory.rule=first|count`` names which learning-time rule (``learning_time`` or
``learning_time(rule=count)``), default the paper's -- so a figure whose proxy was not selected is
skipped, with a row that says so.

Figures go to ``<out>/figures`` only when the experiment has an output folder; their paths
(relative to it) are listed in ``ctx.artifacts["figures"]``. Rows: per relation the sample-level
Spearman and the Spearman of the bin means against the bin centers (``binned_spearman``: is the
trend monotone?); per histogram the skewness and Sarle's bimodality coefficient (> 5/9 suggests
two modes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.plots import binned_relation, plot_binned, plot_extreme_images, plot_histogram
from harness.tasks.base import EvalContext, Row, positive_int, register_task
from harness.tasks.memorization import ReferenceTask
from proxies.learning_time import RULES, LearningTime

DEFAULTS: dict[str, Any] = {"bins": 20, "per_class": 5, "rule": "first"}
MAX_PER_CLASS = 50
RELATIONS = (("learning_time", "memorization"), ("csl", "learning_time"), ("csl", "memorization"))  # (y, x)
NOT_SELECTED = "skipped_proxy_not_selected"


def _constant(v: np.ndarray) -> bool:
    """Constant up to rounding: bin means of one repeated value differ in the last bits (1/12 over 361
    samples is 0.0833333333333329), and Spearman would rank that rounding as a trend."""
    return bool(np.ptp(v) <= 1e-12 * np.abs(v).max())


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or _constant(x) or _constant(y):
        return float("nan")
    from scipy import stats  # imported where used: ~1 s that `memprox list` need not pay

    return float(stats.spearmanr(x, y).statistic)


def skewness(values: np.ndarray) -> float:
    """Sample skewness of the finite values; NaN for fewer than 3 or a constant vector (scipy
    would warn about catastrophic cancellation and return noise)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 3 or np.all(v == v[0]):
        return float("nan")
    from scipy import stats

    return float(stats.skew(v))


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient with the sample skewness and excess kurtosis (bias-corrected);
    5/9 is its value for a uniform distribution, larger values suggest bimodality."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = v.size
    if n < 4 or np.all(v == v[0]):
        return float("nan")
    from scipy import stats

    g = stats.skew(v, bias=False)
    k = stats.kurtosis(v, bias=False)
    return float((g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


@register_task
class Theory(ReferenceTask):
    name = "theory"
    folders = ("figures",)
    description = "binned relations of learning time, CSL and memorization, histograms, extreme images (figures)"
    defaults = DEFAULTS

    def validate(self) -> None:
        positive_int(self.name, "bins", self.params["bins"])
        # the image grid has 2 x per_class columns per class: 50 (100 images a row) is past readable,
        # and 10,000 built ~200,000 axes for minutes and gigabytes
        positive_int(self.name, "per_class", self.params["per_class"], maximum=MAX_PER_CLASS)
        if self.params["rule"] not in RULES:
            raise HarnessError(f"theory.rule must be one of {', '.join(RULES)}, got {self.params['rule']!r}")

    @property
    def learning_time_label(self) -> str:
        """The proxy label whose scores are "learning time" here (e.g. learning_time(rule=count))."""
        return LearningTime(rule=self.params["rule"]).label

    def axis_labels(self) -> dict[str, str]:
        """Each quantity's axis label, naming what was measured and its unit: "memorization" alone
        read as stability memorization whatever --reference was (1 - C-score, a score file), and
        "learning time" alone hid which rule's proxy it was."""
        rc = self.reference
        if rc.kind == "stability":
            variant = "" if rc.variant == "correct" else f", variant={rc.variant}"
            memorization = f"memorization (stability, K = {rc.k}{variant})"
        elif rc.kind == "cscore":
            memorization = f"memorization = 1 - C-score ({rc.label()})"
        else:
            memorization = f"memorization ({rc.label()})"
        return {"csl": "CSL (training loss summed over epochs)",
                "learning_time": f"learning time ({self.learning_time_label}, fraction of epochs)",
                "memorization": memorization}

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        bins, per_class = self.params["bins"], self.params["per_class"]
        tag = f"seed{ctx.setting.seed}"
        sources = {"csl": "csl", "learning_time": self.learning_time_label}
        values = {q: scores[label] for q, label in sources.items() if label in scores}
        values["memorization"] = self.reference_scores(ctx)[0].scores
        rows: list[Row] = []
        figures: list[Path] = []
        names = self.axis_labels()

        def target(name: str) -> Path | None:
            return None if ctx.out is None else Path(ctx.out) / "figures" / f"{name}_{tag}.png"

        def skipped(label: str) -> None:
            rows.append({"proxy": label, "metric": NOT_SELECTED, "value": float("nan")})

        for y, x in RELATIONS:
            label = f"{y} vs {x}"
            if y not in values or x not in values:
                skipped(label)
                continue
            table = binned_relation(values[x], values[y], bins=bins)
            rows.append({"proxy": label, "metric": "spearman", "value": _spearman(values[x], values[y])})
            rows.append({"proxy": label, "metric": "binned_spearman",
                         "value": _spearman(table["bin_center"].to_numpy(), table["mean"].to_numpy())})
            if (path := target(f"{y}_vs_{x}")) is not None:
                figures.append(plot_binned(values[x], values[y], names[x], names[y], path, bins=bins,
                                           title=f"seed {ctx.setting.seed}: bin means over {bins} equal-width bins"))
        for q in ("csl", "learning_time"):
            if q not in values:
                skipped(f"{q} histogram")
                continue
            rows.append({"proxy": q, "metric": "skewness", "value": skewness(values[q])})
            rows.append({"proxy": q, "metric": "bimodality_coefficient", "value": bimodality_coefficient(values[q])})
            if (path := target(f"{q}_histogram")) is not None:
                figures.append(plot_histogram(values[q], names[q], path, title=f"seed {ctx.setting.seed}"))
        if "csl" not in values or not ctx.data.dataset.is_image:
            skipped("csl extreme images")
        elif (path := target("csl_extremes")) is not None:
            figures.append(plot_extreme_images(
                ctx.data.x.cpu().numpy(), ctx.data.labels, values["csl"], list(ctx.data.dataset.classes),
                path, per_class=per_class))
        if ctx.out is not None:
            ctx.artifacts.setdefault("figures", []).extend(str(f.relative_to(ctx.out)) for f in figures)
        return rows
