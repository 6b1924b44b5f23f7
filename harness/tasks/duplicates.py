"""Duplicate detection (paper Table 3): P pairs, slot a gets b's image with a different label."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.config import ExperimentConfig
from harness.corruption import default_duplicate_pairs
from harness.runspec import Corruption, DataSpec
from harness.tasks.base import EvalContext, Row, Setting, Task, detection_rows, register_task


@register_task
class Duplicates(Task):
    name = "duplicates"
    description = "detect both members of duplicated pairs with conflicting labels (AUROC, AUPRC)"

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, n_train: int) -> list[Setting]:
        pairs = cfg.duplicate_pairs or default_duplicate_pairs(n_train)
        out = []
        for seed in cfg.seeds:
            c = Corruption(kind="duplicates", pairs=pairs, seed=seed)
            out.append(Setting(self.name, c.label(), replace(base_data, corruption=c), seed))
        return out

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        return detection_rows(ctx.data.positives, scores, ("auroc", "auprc"))
