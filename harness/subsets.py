"""Training subsets (folds, halves, random fractions) as index arrays, deterministic in the seed.

Used both to train a run on part of the data and by proxies to know which samples a run did *not*
train on (confident learning's held-out fold, SSFT's first split, stability's out-of-subset models).
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.runspec import TrainSubset


def stratified_folds(labels: np.ndarray, count: int, seed: int, halves: bool = False) -> list[np.ndarray]:
    """Held-out index sets of `count` stratified folds (sorted), seeded. `labels` are those the run
    trains on, noise included, so a class can be thinner here than in the clean labels planning
    checks; `halves` names SSFT's two halves in the error (it suggested fewer folds, which SSFT has not)."""
    counts = np.bincount(labels)
    if counts[counts > 0].min() < count:
        thin = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
        what, fix = ("2 stratified halves (ssft)", "") if halves else (f"{count} stratified folds", " or fewer folds")
        raise HarnessError(
            f"cannot make {what}: class {thin} has only {counts[thin]} sample(s) among the labels the run trains "
            f"on (label noise included); use a larger --subset{fix}"
        )
    from sklearn.model_selection import StratifiedKFold  # here: scikit-learn costs every worker seconds to import

    skf = StratifiedKFold(n_splits=count, shuffle=True, random_state=seed)
    return [np.sort(test) for _, test in skf.split(np.zeros(len(labels)), labels)]


def random_subset(n: int, fraction: float, seed: int, index: int) -> np.ndarray:
    """Model `index`'s subset: a prefix of its own seeded permutation, so model j is the same
    whether K models or more are asked for later."""
    if not 0.0 < fraction < 1.0:
        raise HarnessError(f"subset fraction must be in (0, 1) (got {fraction})")
    perm = np.random.default_rng([seed, index]).permutation(n)
    return np.sort(perm[: int(round(fraction * n))])


def subset_indices(subset: TrainSubset, labels: np.ndarray) -> np.ndarray:
    n = len(labels)
    if subset.kind == "all":
        return np.arange(n)
    if subset.kind == "fold":
        held_out = stratified_folds(labels, subset.count, subset.seed)[subset.index]
        return np.setdiff1d(np.arange(n), held_out)
    if subset.kind == "half":
        return stratified_folds(labels, 2, subset.seed, halves=True)[subset.index]
    if subset.kind == "random":
        return random_subset(n, subset.fraction, subset.seed, subset.index)
    raise HarnessError(f"unknown training subset kind {subset.kind!r}")
