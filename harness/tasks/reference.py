"""The memorization reference shared by every task that compares against it (memorization,
theory, privacy): what ``--reference`` and ``--task-arg memorization.k|fraction|variant|model``
ask for, parsed and validated once by ``make_tasks`` into one ``ReferenceConfig``.

- ``stability`` (default): Feldman & Zhang's estimator from K models, each trained on a random
  fraction r of the clean training set, optionally with another architecture (``model``).
- ``fz:PATH`` / ``cscore:PATH``: a published score file, checked against the dataset's clean
  labels while planning, so a misaligned file stops the experiment before anything trains.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from baselines.references import Reference, load_cscore, load_fz
from baselines.stability import (
    EVAL_LAST,
    VARIANTS,
    split_half_pearson,
    stability_matrix,
    stability_specs,
    subset_masks,
)
from baselines.stability import stability_memorization as _stability
from harness.errors import HarnessError
from harness.model_registry import model_fingerprint
from harness.registry import did_you_mean
from harness.runspec import RunSpec
from harness.values import expand_home, leading_zero_hint
from proxies.base import Need

#: K = 128 (~38 out-of-subset models per sample at r = 0.7). On digits with the quick preset the
#: estimates of two disjoint halves of the models correlate 0.97 at K = 128 (0.91 at K = 64, 0.88
#: at K = 32), i.e. a reliability of ~0.98, so the reference's own noise barely dents a proxy's
#: Pearson; the 128 models train as a batched ensemble in ~30 s per seed on 2 CPU cores.
REFERENCE_DEFAULTS: dict[str, Any] = {"k": 128, "fraction": 0.7, "variant": "correct", "model": None}
#: Stability models at most: each is a training run (the estimator is reliable from K = 128).
MAX_REFERENCE_MODELS = 10_000
LOADERS = {"fz": load_fz, "cscore": load_cscore}
#: The arrays each score file holds (`baselines.references`' loaders read them): named when a file is no .npz.
FILE_KEYS = {"fz": ("tr_mem", "tr_labels"), "cscore": ("scores", "labels")}
#: How an .npz (a zip archive; the second: an empty one) and a .npy begin; numpy reads anything else as a pickle.
ARCHIVE_STARTS = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")
#: Fewer samples with a stability estimate than this stop the experiment while planning: a Pearson
#: over 3 samples came out as -0.76 [-0.88, -0.64], "significantly worse than the best", from noise.
MIN_REFERENCE_SAMPLES = 10


@dataclass(frozen=True)
class ReferenceConfig:
    """What `--reference` and `--task-arg memorization.*` ask for, validated."""

    kind: str = "stability"  # "stability" | "fz" | "cscore"
    path: str = ""
    k: int = REFERENCE_DEFAULTS["k"]
    fraction: float = REFERENCE_DEFAULTS["fraction"]
    variant: str = REFERENCE_DEFAULTS["variant"]
    model: str | None = None  # the stability models' architecture; None: the proxies' model

    def label(self) -> str:
        return "stability" if self.kind == "stability" else f"{self.kind}:{Path(self.path).name}"

    # planning --------------------------------------------------------------------------
    def check(self, labels: np.ndarray, full_size: int | None = None) -> None:
        """A score file that does not match the dataset's clean training labels (or its size before
        ``--subset``) is bad input: fail before training."""
        if self.kind != "stability":
            try:
                self.load_file(labels, full_size)
            except OSError as e:  # e.g. a name longer than the file system allows
                raise HarnessError(f"--reference {self.kind}:{self.path} cannot be read ({e.strerror or e}); pass "
                                   "an existing score file") from e

    def check_size(self, n: int) -> None:
        """Each stability model trains on round(fraction * N) samples: at least one, and not all
        (a sample that no model leaves out has no memorization estimate)."""
        size = round(self.fraction * n)
        if self.kind == "stability" and not 1 <= size < n:
            raise HarnessError(f"memorization.fraction {self.fraction:g} trains each reference model on {size} of "
                               f"the N={n} samples; pick a fraction that keeps at least one sample in and one out")

    def covered(self, n: int, seeds: tuple[int, ...]) -> tuple[int, int]:
        """Over the seeds, the fewest samples with a stability estimate (some model trained on
        them, some left them out) and the fewest with a standard error (two of each). The subsets
        are known before anything trains, so a reference of a handful of samples is refused here."""
        return _coverage(n, self.k, self.fraction, tuple(seeds))

    def check_coverage(self, n: int, seeds: tuple[int, ...]) -> int:
        """Refuse a stability reference of fewer than MIN_REFERENCE_SAMPLES samples, and say when no
        sample gets a standard error; returns the fewest samples with an estimate (0: a file)."""
        if self.kind != "stability":
            return 0
        estimated, with_error = self.covered(n, seeds)
        if estimated < MIN_REFERENCE_SAMPLES:
            raise HarnessError(f"memorization.k={self.k} at fraction {self.fraction:g} of N={n} samples gives "
                               f"{estimated} sample(s) a memorization estimate (a sample needs a model that trained "
                               f"on it and one that left it out), fewer than {MIN_REFERENCE_SAMPLES}: correlations "
                               "over them say nothing; raise memorization.k, use a fraction nearer 0.5, or more "
                               "samples")
        if with_error == 0:
            warnings.warn(f"memorization.k={self.k}: no sample has two models that trained on it and two that "
                          "left it out, so the reference's standard errors (reference_mean_stderr) are NaN; "
                          "raise memorization.k (128 is the default)", UserWarning, stacklevel=4)
        return estimated

    def base(self, base: RunSpec) -> RunSpec:
        """The run the stability models derive from: the proxies' base run, or the same data,
        recipe and seed with another architecture (the paper's reference came from ResNet-50s
        while its proxies came from ResNet-18s; an MLP lets the K models train batched on a CPU)."""
        return base if self.model is None else replace(base, model=self.model, model_sha=model_fingerprint(self.model))

    def specs(self, base: RunSpec) -> list[RunSpec]:
        return stability_specs(self.base(base), self.k, self.fraction) if self.kind == "stability" else []

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(spec, frozenset({EVAL_LAST})) for spec in self.specs(base)]

    # evaluation ------------------------------------------------------------------------
    def load_file(self, labels: np.ndarray, full_size: int | None = None) -> Reference:
        _check_archive(self.kind, self.path)
        return LOADERS[self.kind](self.path, labels, full_size)

    def scores(self, runs: Mapping[RunSpec, Any], base: RunSpec, clean_labels: np.ndarray,
               full_size: int | None = None) -> tuple[Reference, float]:
        """The setting's reference and, for stability, its split-half Pearson (NaN otherwise)."""
        if self.kind != "stability":
            return self.load_file(clean_labels, full_size), float("nan")
        matrix, masks = stability_matrix(runs, self.base(base), self.k, self.fraction, self.variant)
        return _stability(matrix, masks), split_half_pearson(matrix, masks)


def _check_archive(kind: str, path: str) -> None:
    """numpy reads a file that is neither an .npz nor a .npy as a pickle, and refusing pickles it said a
    CSV or text file "contains pickled data" (an empty one escaped as a bare EOFError): say what the file
    must be. A missing file, a folder or a .npy is left to the loader, which names each."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return
    if not head.startswith(ARCHIVE_STARTS):
        scores, labels = FILE_KEYS[kind]
        what = "is empty" if not head else f"is not an .npz archive (it begins {head!r})"
        raise HarnessError(f"--reference {kind}:{path} {what}; a {kind} file must be an .npz holding the arrays "
                           f"{scores} and {labels} (np.savez(PATH, {scores}=..., {labels}=...), one entry per "
                           "training sample; see docs/experiments.md, The memorization reference)")


@cache  # the memorization, theory and privacy tasks share one reference: counted once
def _coverage(n: int, k: int, fraction: float, seeds: tuple[int, ...]) -> tuple[int, int]:
    inside = [subset_masks(n, k, fraction, seed).sum(axis=0) for seed in seeds]
    estimated = min(int(((c >= 1) & (c <= k - 1)).sum()) for c in inside)
    with_error = min(int(((c >= 2) & (c <= k - 2)).sum()) for c in inside)
    return estimated, with_error


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def reference_config(reference: str, args: Mapping[str, Any]) -> ReferenceConfig:
    """Parse `--reference` and the reference's parameters (a subset of REFERENCE_DEFAULTS)."""
    unknown = sorted(set(args) - set(REFERENCE_DEFAULTS))
    if unknown:
        raise HarnessError(f"the memorization reference has no parameter(s) {unknown}"
                           f"{did_you_mean(unknown, REFERENCE_DEFAULTS)}; "
                           f"valid: {', '.join(REFERENCE_DEFAULTS)}")
    p = {**REFERENCE_DEFAULTS, **args}
    if not _is_int(p["k"]) or p["k"] < 2:
        raise HarnessError(f"memorization.k must be an integer >= 2 (models to train), got {p['k']!r}"
                           f"{leading_zero_hint(p['k'])}")
    if p["k"] > MAX_REFERENCE_MODELS:
        raise HarnessError(f"memorization.k must be at most {MAX_REFERENCE_MODELS} (models to train), got {p['k']}")
    fraction = p["fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise HarnessError(f"memorization.fraction must be a number in (0, 1), got {fraction!r}")
    if not isinstance(p["variant"], str) or p["variant"] not in VARIANTS:
        raise HarnessError(f"memorization.variant must be one of {', '.join(VARIANTS)}, got {p['variant']!r}")
    model = p["model"]
    if model is not None:
        from harness.models import MODELS

        if not isinstance(model, str) or model not in MODELS:
            raise HarnessError(f"memorization.model {model!r} is not a registered model; "
                               f"valid: {', '.join(sorted(MODELS))}")
    kind, _, path = reference.partition(":")
    if not ((kind == "stability" and not path) or (kind in LOADERS and path)):
        raise HarnessError(f"unknown --reference {reference!r}; use stability, fz:PATH or cscore:PATH")
    path = str(expand_home(path, "--reference")) if path else ""
    return ReferenceConfig(kind, path, p["k"], float(fraction), p["variant"], model)
