"""Mislabeled-sample detection (paper Table 2): symmetric noise or a file of real noisy labels.

Ground truth without positives (a rate that flips no sample at this N, a label file equal to the
clean labels) or without negatives (a rate that flips every sample, a label file that differs
everywhere) would give an all-NaN leaderboard; it is bad input, refused while planning."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from harness.config import ExperimentConfig
from harness.corruption import read_label_file
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.prepared import file_sha
from harness.runspec import Corruption, DataSpec
from harness.tasks.base import EvalContext, Row, Setting, Task, detection_rows, register_task

#: A label file agreeing with the clean labels on less than chance agreement (what a file in another
#: order gives) plus this share is most likely misaligned: real label noise keeps most labels (CIFAR-10N's
#: worst labels agree on 60 %), while a shuffled file agrees on about 1/C.
MISALIGNED_MARGIN = 0.1


@register_task
class Mislabeled(Task):
    name = "mislabeled"
    headline = "auroc"
    description = "detect samples whose label was changed (AUROC, AUPRC, precision at k)"

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        n_train = dataset.n_train
        if cfg.noisy_labels:
            self._check_label_file(cfg, dataset)
            c = Corruption(kind="label_file", label_file=cfg.noisy_labels, label_file_sha=file_sha(cfg.noisy_labels))
            data = replace(base_data, corruption=c)
            return [Setting(self.name, c.label(), data, s) for s in cfg.seeds]
        if not cfg.noise_rates:
            raise HarnessError("no noise rates given; pass e.g. --noise-rates 0.01,0.1")
        for rate in cfg.noise_rates:  # each in (0, 1) and unique: the option table checked them
            if round(rate * n_train) < 1:  # symmetric_noise flips exactly round(rate * N) samples
                raise HarnessError(f"noise rate {rate} flips no label of N={n_train} samples, so there is nothing "
                                   f"to detect; use a rate >= {1 / n_train:.2g} = 1/N or a larger --subset")
            if round(rate * n_train) >= n_train:
                raise HarnessError(f"noise rate {rate} flips every label of N={n_train} samples, so no clean sample "
                                   "is left to tell the flipped ones from; use a smaller rate")
        out = []
        for rate in cfg.noise_rates:
            for seed in cfg.seeds:
                c = Corruption(kind="noise", rate=rate, seed=seed)
                out.append(Setting(self.name, c.label(), replace(base_data, corruption=c), seed))
        return out

    @staticmethod
    def _check_label_file(cfg: ExperimentConfig, dataset: Dataset) -> None:
        assert cfg.noisy_labels is not None  # checked only when a label file is given
        clean = dataset.y_train.numpy()
        noisy = read_label_file(cfg.noisy_labels, dataset.full_train_size, dataset.num_classes)[: len(clean)]
        if not np.any(noisy != clean):
            raise HarnessError(f"--noisy-labels {cfg.noisy_labels} equals the clean labels on all {len(clean)} "
                               "samples: no mislabeled sample to detect; check the file or the key")
        if np.all(noisy != clean):
            raise HarnessError(f"--noisy-labels {cfg.noisy_labels} differs from the clean labels on all {len(clean)} "
                               "samples: no correctly labeled sample to tell the mislabeled ones from; check the file "
                               "(is it in the dataset's canonical order?) or the key")
        agree = float(np.mean(noisy == clean))
        chance = float(np.sum(np.bincount(clean, minlength=dataset.num_classes) / len(clean)
                              * np.bincount(noisy, minlength=dataset.num_classes) / len(noisy)))
        if agree < chance + MISALIGNED_MARGIN:  # real label noise keeps most labels; a shuffled file keeps ~chance
            warnings.warn(f"--noisy-labels {cfg.noisy_labels} agrees with the clean labels on only {agree:.1%} of the "
                          f"{len(clean)} samples, close to the {chance:.1%} that labels in another order would by "
                          "chance: check that the file is in the dataset's canonical order", stacklevel=2)

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        return detection_rows(ctx.data.positives, scores, ("auroc", "auprc", "precision_at_k"), ctx.resamples())
