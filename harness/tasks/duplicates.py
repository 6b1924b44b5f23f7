"""Duplicate detection (paper Table 3): P pairs, slot a gets b's image with a different label."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.config import ExperimentConfig
from harness.corruption import default_duplicate_pairs
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.runspec import Corruption, DataSpec
from harness.tasks.base import EvalContext, Row, Setting, Task, detection_rows, register_task


@register_task
class Duplicates(Task):
    name = "duplicates"
    headline = "auroc"
    description = "detect both members of duplicated pairs with conflicting labels (AUROC, AUPRC)"

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        n_train = dataset.n_train
        pairs = default_duplicate_pairs(n_train) if cfg.duplicate_pairs is None else cfg.duplicate_pairs
        most = (n_train - 1) // 2  # 2P < N: at least one sample outside the pairs, a negative
        if isinstance(pairs, bool) or not isinstance(pairs, int) or not 1 <= pairs <= most:
            raise HarnessError(f"--duplicate-pairs {pairs!r} must be an integer in [1, {most}] for N={n_train} "
                               "samples (0 pairs leave nothing to detect, N/2 pairs leave no sample outside them); "
                               "omit it for the default 0.5% of N")
        out = []
        for seed in cfg.seeds:
            c = Corruption(kind="duplicates", pairs=pairs, seed=seed)
            out.append(Setting(self.name, c.label(), replace(base_data, corruption=c), seed))
        return out

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        return detection_rows(ctx.data.positives, scores, ("auroc", "auprc"), ctx.resamples())
