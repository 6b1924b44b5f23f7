"""Memorization similarity (paper Tables 1 and 4): each proxy against a memorization reference.

The reference (harness.tasks.reference) is chosen with ``--reference``:
- ``stability`` (default): Feldman & Zhang's estimator from K models, each trained on a random
  fraction r of the clean training set (``--task-arg memorization.k=128``, ``.fraction=0.7``,
  ``.variant=correct|prob``, ``.model=NAME`` to train the K models with another architecture
  than the proxies' runs). The K runs are ordinary store entries, so a second experiment
  reuses them, and the planner trains them as one batched ensemble when the model allows it.
- ``fz:PATH`` / ``cscore:PATH``: a published score file, checked against the dataset's clean
  labels while planning, so a misaligned file stops the experiment before anything trains.

Metrics per proxy: cosine, Pearson, Spearman on all samples and on the top-k samples by the
reference (``.top_k``, default 10% of N; a reference tie at the k-th place is broken at random,
the metric the mean over seeded draws, see harness.similarity), each with bootstrap replicates
for its confidence interval. Rows under proxy "reference" describe the reference's own noise: its
mean per-sample standard error and the split-half Pearson between the estimates of the even- and
odd-numbered models (a ceiling on any proxy's Pearson), the size of the reference's tie group at
the k-th place (``reference_topk_tied``; when that group holds the maximum, the top-k set is flat
and its correlations undefined), and for stability its measured cost (``reference_flops``,
``reference_seconds`` and both relative to one plain run).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from baselines.references import Reference
from baselines.stability import EVAL_LAST
from harness.config import ExperimentConfig
from harness.cost import cost_row, run_cost
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.similarity import MIN_SAMPLES, similarity_boot, similarity_table, top_k_count
from harness.tasks.base import EvalContext, Row, Setting, Task, register_task
from harness.tasks.reference import REFERENCE_DEFAULTS, ReferenceConfig, reference_config
from harness.values import leading_zero_hint
from proxies.base import Need

DEFAULTS: dict[str, Any] = {**REFERENCE_DEFAULTS, "top_k": None}


class ReferenceTask(Task):
    """A task on the clean setting of each seed that compares against the shared reference; the
    memorization, theory and privacy tasks share these settings, base runs, scores and K runs."""

    uses_reference = True
    reference: ReferenceConfig
    #: the reference parameters (`--task-arg memorization.NAME`) this task reads; one that no
    #: selected task reads is refused (privacy reads the K models' phi, not their correctness)
    reference_params: tuple[str, ...] = tuple(REFERENCE_DEFAULTS)

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        self.reference.check(dataset.y_train.numpy(), dataset.full_train_size)
        self.reference.check_size(dataset.n_train)
        self.check_coverage(self.reference.check_coverage(dataset.n_train, tuple(cfg.seeds)))
        data = replace(base_data, corruption=Corruption())
        return [Setting(self.name, "clean", data, seed) for seed in cfg.seeds]

    def check_coverage(self, estimated: int) -> None:
        """A task's own check of the fewest samples with a stability estimate (0 for a score file)."""

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        return self.reference.needs(base)

    def reference_scores(self, ctx: EvalContext):
        """The setting's reference and, for stability, its split-half Pearson (NaN otherwise)."""
        return self.reference.scores(ctx.runs, ctx.base, ctx.data.y_clean, ctx.data.dataset.full_train_size)


@register_task
class Memorization(ReferenceTask):
    name = "memorization"
    folders = ("memorization",)
    headline = "pearson"
    description = "similarity of each proxy to a memorization reference (cosine, Pearson, Spearman; all and top-k)"
    defaults = DEFAULTS  # k, fraction, variant, model go to the shared ReferenceConfig (make_tasks)

    def __init__(self, reference: ReferenceConfig | None = None, **params: Any) -> None:
        if reference is None:  # built alone (not by make_tasks): its own reference parameters
            reference = reference_config("stability", {k: v for k, v in params.items() if k in REFERENCE_DEFAULTS})
        super().__init__(reference, **params)

    def validate(self) -> None:
        top_k = self.params["top_k"]
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise HarnessError(f"memorization.top_k must be a positive integer, got {top_k!r}"
                               f"{leading_zero_hint(top_k)}")
        if top_k is not None and top_k < MIN_SAMPLES["pearson"]:  # the top-k correlations would all be NaN
            raise HarnessError(f"memorization.top_k must be at least {MIN_SAMPLES['pearson']}, got {top_k}: a "
                               "Pearson or Spearman of fewer samples is +-1 whatever the proxy (omit it for 10% of N)")

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        top_k = self.params["top_k"]
        n_train = dataset.n_train
        if top_k is not None and top_k > n_train:  # it would be cut to N: the top-k metrics would be the others
            raise HarnessError(f"memorization.top_k {top_k} is larger than the N={n_train} training samples; "
                               f"pass at most {n_train} (default: 10% of N)")
        return super().settings(cfg, base_data, dataset)

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        top_k = self.params["top_k"]
        reference, split_half = self.reference_scores(ctx)
        estimated = int(np.isfinite(reference.scores).sum())
        if top_k is not None and top_k >= estimated:
            warnings.warn(f"memorization.top_k {top_k} is not below the {estimated} samples with a reference "
                          "estimate (the others were never held out): the *_topk metrics are those over all of "
                          "them; lower memorization.top_k", stacklevel=2)
        small_top_k_warning(estimated, top_k)
        flat_reference_warning(reference.scores)
        resamples = ctx.resamples()
        boot = similarity_boot(scores, reference.scores, resamples, top_k) if resamples is not None else {}
        rows: list[Row] = []
        for proxy, metrics in similarity_table(scores, reference.scores, top_k).items():
            for metric, value in metrics.items():
                row: Row = {"proxy": proxy, "metric": metric, "value": value}
                if proxy in boot:
                    row["boot"] = boot[proxy][metric]
                rows.append(row)
        if reference.stderr is not None:  # over the samples whose stderr is known (>= 2 models in and out)
            known = reference.stderr[np.isfinite(reference.stderr)]
            rows.append({"proxy": "reference", "metric": "reference_mean_stderr",
                         "value": float(known.mean()) if len(known) else float("nan")})
        if np.isfinite(split_half):
            rows.append({"proxy": "reference", "metric": "reference_split_half_pearson", "value": split_half})
        rows.append({"proxy": "reference", "metric": "reference_topk_tied",
                     "value": float(boundary_tie_group(reference.scores, top_k))})
        if self.reference.kind == "stability":
            for metric, value in reference_cost(self.reference, ctx).items():
                rows.append({"proxy": "reference", "metric": f"reference_{metric}", "value": value})
        keep_reference(ctx, reference)
        return rows


def small_top_k_warning(estimated: int, top_k: int | None) -> None:
    """Say why the *_topk correlations are blank when the top-k set is too small to correlate (the
    default 10% of N below N = 26, or few samples with a reference estimate): NaN, not the +-1 that
    two samples always give."""
    k = top_k_count(estimated, top_k) if estimated else 0
    if k < MIN_SAMPLES["pearson"]:
        blank = "pearson_topk and spearman_topk" + (" and cosine_topk" if k < MIN_SAMPLES["cosine"] else "")
        warnings.warn(f"the memorization top-k set holds {k} of the {estimated} samples with a reference estimate: "
                      f"{blank} are NaN (a correlation of so few samples is +-1 whatever the proxy); the default 10% "
                      "needs at least 26 samples, or pass memorization.top_k",
                      stacklevel=3)


def flat_reference_warning(reference: np.ndarray) -> None:
    """Say why every proxy's Pearson and Spearman are NaN when the reference ranks nothing (a stability
    reference from models that all got every sample right: 0 everywhere), rather than leave them blank."""
    finite = reference[np.isfinite(reference)]
    if len(finite) >= MIN_SAMPLES["pearson"] and np.ptp(finite) == 0:
        warnings.warn(f"the memorization reference is {finite[0]:g} for all {len(finite)} samples with an estimate: "
                      "it ranks nothing, so every proxy's Pearson and Spearman are NaN (for a stability reference: "
                      "more epochs, more models or harder data)", stacklevel=3)


def keep_reference(ctx: EvalContext, reference: Reference) -> None:
    """`memorization/reference_seed<s>.csv`: the reference per sample, and for stability its
    standard error per sample (methods.md asks for it), beside the proxies' scores/ files."""
    name = f"memorization/reference_seed{ctx.setting.seed}.csv"
    table = pd.DataFrame({"index": np.arange(len(reference.scores)), "reference": reference.scores})
    if reference.stderr is not None:
        table["reference_stderr"] = reference.stderr
    ctx.keep_table("memorization", name, table)


def boundary_tie_group(reference: np.ndarray, top_k: int | None) -> int:
    """Samples sharing the reference value at the k-th place. When that value is also the
    reference's maximum, the top-k set is one tie group, constant in the reference, and the top-k
    Pearson and Spearman are undefined (left blank): a stability reference from few models puts
    hundreds of samples at exactly 1.0 (never right when held out), e.g. 473 of 4,000 CIFAR-10
    images at K = 32."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[~np.isnan(ref)]
    if len(ref) == 0:
        return 0
    kth = np.sort(ref)[::-1][top_k_count(len(ref), top_k) - 1]
    return int((ref == kth).sum())


def reference_cost(rc: ReferenceConfig, ctx: EvalContext) -> dict[str, float]:
    """Measured FLOPs and seconds of the K stability models (training and final eval pass), and
    their ratio to the base run's plain training: the paper's Table 5 row for stability, at the
    K used (NaN when no selected proxy trains the base run: it is not trained for a ratio alone).
    Seconds of batched members are their share of the ensemble's wall time."""
    flops = seconds = 0.0
    for spec in rc.specs(ctx.base):
        f, sec = run_cost(ctx.runs[spec], {EVAL_LAST.key}, include_training=True)
        flops, seconds = flops + f, seconds + sec
    return cost_row(flops, seconds, ctx.runs.get(ctx.base))
