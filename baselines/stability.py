"""Stability-based memorization (Feldman 2020; estimator of Feldman & Zhang 2020).

K models are trained, each on a random subset of the training set; for sample i the estimate is
the mean correctness of the models that trained on i minus that of the models that did not.
This module holds only the arithmetic and the subset masks; training lives in the harness.
"""

from __future__ import annotations

import warnings

import numpy as np

from baselines.references import Reference
from harness.errors import HarnessError


def subset_masks(n: int, k: int, fraction: float, seed: int) -> np.ndarray:
    """(k, n) bool membership masks; model j trains on the first round(fraction*n) samples of
    ``default_rng([seed, j]).permutation(n)``.

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
        masks[j, np.random.default_rng([seed, j]).permutation(n)[:m]] = True
    return masks


def _group_stats(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column count, mean and sample variance (ddof=1; 0 when count <= 1) over masked rows.

    Written with sums instead of nanmean/nanvar so empty groups yield NaN without numpy's
    RuntimeWarnings; the caller reports them once, with a count.
    """
    count = mask.sum(axis=0)
    safe = np.maximum(count, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe
    sq = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    var = np.where(count > 1, sq / np.maximum(count - 1, 1), 0.0)
    mean = np.where(count > 0, mean, np.nan)
    return count, mean, var


def stability_memorization(correct: np.ndarray, trained_on: np.ndarray) -> Reference:
    """mem_i = mean(correct | trained on i) - mean(correct | not trained on i), with stderr.

    ``correct`` is (K, N) eval-mode correctness (bool or float; p(y_i) for the probability
    variant) of K final models on every training sample; ``trained_on`` is the (K, N) bool
    membership mask. stderr_i = sqrt(var_in/n_in + var_out/n_out), the usual standard error of a
    difference of two independent means. Samples that every model (or no model) trained on have
    no estimate: they get NaN and a single warning with their count.
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
