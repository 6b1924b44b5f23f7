"""Stability-based memorization (Feldman 2020; estimator of Feldman & Zhang 2020).

K models are trained, each on a random subset of the training set; for sample i the estimate is
the mean correctness of the models that trained on i minus that of the models that did not.
This module holds the arithmetic, the subset masks and the K run specs; training lives in the
harness (which trains the K runs as one batched ensemble when the model allows it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from baselines.references import Reference
from harness.errors import HarnessError
from harness.recorders import EVAL_LAST
from harness.runspec import RunSpec, TrainSubset
from harness.store import StoredRun
from harness.subsets import random_subset

#: Which eval_pass array each variant reads: 0/1 correctness (Feldman & Zhang) or p(label).
VARIANTS = {"correct": "correct", "prob": "p_label"}
#: Model j of the reference for base seed s trains with seed SEED_STRIDE * (s + 1) + j.
SEED_STRIDE = 1_000_000


def subset_masks(n: int, k: int, fraction: float, seed: int) -> np.ndarray:
    """(k, n) bool membership masks; model j trains on the first round(fraction*n) samples of
    ``default_rng([seed, j]).permutation(n)`` -- ``harness.subsets.random_subset``, the very
    function that picks a random-subset run's training samples, so masks and runs cannot drift.

    Seeding each model by (seed, j) rather than drawing from one stream makes model j's subset
    independent of k, so an estimate can later be refined by training more models while the
    models already trained (and cached) stay valid.
    """
    if not 0.0 < fraction < 1.0:
        raise HarnessError(f"subset fraction must be in (0, 1), got {fraction}")
    if n < 1 or k < 0:
        raise HarnessError(f"need n >= 1 samples and k >= 0 models, got n={n}, k={k}")
    m = round(fraction * n)
    if m == 0 or m == n:
        raise HarnessError(
            f"subset fraction {fraction} of {n} samples rounds to {m}: every model would train "
            "on none or all of the samples; choose a fraction further from 0 and 1"
        )
    masks = np.zeros((k, n), dtype=bool)
    for j in range(k):
        masks[j, random_subset(n, fraction, seed, j)] = True
    return masks


def model_seed(base_seed: int, j: int) -> int:
    """Training seed (initialisation, batch order) of model j.

    Memorization is defined over the training algorithm's randomness, initialisation included,
    so each model gets its own seed; deriving it from (base seed, j) keeps the models of
    different base seeds apart and model j the same whatever K is.
    """
    return SEED_STRIDE * (base_seed + 1) + j


def stability_specs(base: RunSpec, k: int, fraction: float) -> list[RunSpec]:
    """The K runs of the reference for `base`'s setting: model j trains on random subset j
    (seeded by the base seed) with its own training seed."""
    if k < 2:
        raise HarnessError(f"stability memorization needs at least 2 models (k >= 2), got k={k}")
    return [
        replace(base.with_subset(TrainSubset(kind="random", fraction=fraction, seed=base.seed, index=j)),
                seed=model_seed(base.seed, j))
        for j in range(k)
    ]


def stability_matrix(
    runs: Mapping[RunSpec, StoredRun], base: RunSpec, k: int, fraction: float, variant: str = "correct"
) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) eval-pass values of the K stored runs (correctness, or p(label) for "prob") and
    the (K, N) membership masks of the subsets they trained on."""
    if variant not in VARIANTS:
        raise HarnessError(f"unknown stability variant {variant!r}; valid: {', '.join(VARIANTS)}")
    specs = stability_specs(base, k, fraction)
    matrix = np.stack([runs[s].arrays(EVAL_LAST.key)[VARIANTS[variant]][0] for s in specs])
    return matrix, subset_masks(matrix.shape[1], k, fraction, base.seed)


def split_half_pearson(matrix: np.ndarray, masks: np.ndarray) -> float:
    """Pearson correlation between the estimates from the even- and the odd-numbered models: how
    reproducible the reference is at K/2 models, a ceiling on how well any proxy can track it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = stability_memorization(matrix[0::2], masks[0::2]).scores
        b = stability_memorization(matrix[1::2], masks[1::2]).scores
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _group_stats(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column count, mean and sample variance (ddof=1; NaN when count <= 1: one value has no
    spread to measure, and 0 would claim an exact estimate) over masked rows.

    Written with sums instead of nanmean/nanvar so empty groups yield NaN without numpy's
    RuntimeWarnings; the caller reports them once, with a count.
    """
    count = mask.sum(axis=0)
    safe = np.maximum(count, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe
    sq = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    var = np.where(count > 1, sq / np.maximum(count - 1, 1), np.nan)
    mean = np.where(count > 0, mean, np.nan)
    return count, mean, var


def stability_memorization(correct: np.ndarray, trained_on: np.ndarray) -> Reference:
    """mem_i = mean(correct | trained on i) - mean(correct | not trained on i), with stderr.

    ``correct`` is (K, N) eval-mode correctness (bool or float; p(y_i) for the probability
    variant) of K final models on every training sample; ``trained_on`` is the (K, N) bool
    membership mask. stderr_i = sqrt(var_in/n_in + var_out/n_out), the usual standard error of a
    difference of two independent means; NaN when either group has a single model (at K = 4 and
    fraction 0.7 about 4 in 10 samples have one out-model). Samples that every model (or no model)
    trained on have no estimate: they get NaN and a single warning with their count.
    """
    correct = np.asarray(correct, dtype=np.float64)
    trained_on = np.asarray(trained_on)
    if correct.ndim != 2 or correct.shape != trained_on.shape:
        raise HarnessError(
            f"correct and trained_on must both be (K, N) arrays of the same shape, got "
            f"{correct.shape} and {trained_on.shape}"
        )
    if trained_on.dtype != bool:
        if not np.isin(trained_on, (0, 1)).all():
            raise HarnessError("trained_on must be a boolean membership mask")
        trained_on = trained_on.astype(bool)
    n_in, mean_in, var_in = _group_stats(correct, trained_on)
    n_out, mean_out, var_out = _group_stats(correct, ~trained_on)
    undefined = (n_in == 0) | (n_out == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        stderr = np.sqrt(var_in / np.maximum(n_in, 1) + var_out / np.maximum(n_out, 1))
    scores = np.where(undefined, np.nan, mean_in - mean_out)
    stderr = np.where(undefined, np.nan, stderr)
    if undefined.any():
        warnings.warn(
            f"stability memorization undefined (NaN) for {int(undefined.sum())} of "
            f"{correct.shape[1]} samples that every model or no model trained on; "
            "train more models (raise K)",
            RuntimeWarning,
            stacklevel=2,
        )
    return Reference(name="stability", scores=scores, stderr=stderr)
