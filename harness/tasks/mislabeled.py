"""Mislabeled-sample detection (paper Table 2): symmetric noise or a file of real noisy labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.prepared import file_sha
from harness.runspec import Corruption, DataSpec
from harness.tasks.base import EvalContext, Row, Setting, Task, detection_rows, register_task


@register_task
class Mislabeled(Task):
    name = "mislabeled"
    description = "detect samples whose label was changed (AUROC, AUPRC, precision at k)"

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, n_train: int) -> list[Setting]:
        if cfg.noisy_labels:
            c = Corruption(kind="label_file", label_file=cfg.noisy_labels, label_file_sha=file_sha(cfg.noisy_labels))
            data = replace(base_data, corruption=c)
            return [Setting(self.name, c.label(), data, s) for s in cfg.seeds]
        for rate in cfg.noise_rates:
            if not 0.0 <= rate < 1.0:
                raise HarnessError(f"noise rate {rate} is outside [0, 1); pass rates like --noise-rates 0.01,0.1")
        out = []
        for rate in cfg.noise_rates:
            for seed in cfg.seeds:
                c = Corruption(kind="noise", rate=rate, seed=seed)
                out.append(Setting(self.name, c.label(), replace(base_data, corruption=c), seed))
        return out

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        return detection_rows(ctx.data.positives, scores, ("auroc", "auprc", "precision_at_k"))
