"""What a tracker's results are made of besides the scores: the non-finite warning, labels with
<NA> for samples never seen, and the suspects' image grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.errors import HarnessError


def non_finite_report(spoiled: dict[str, np.ndarray]) -> str:
    """One warning for `scores()`: which samples got NaN because a signal was not finite, and why."""
    samples = np.unique(np.concatenate(list(spoiled.values())))
    per_proxy = ", ".join(f"{label} ({len(idx)})" for label, idx in spoiled.items())
    return (f"SampleTracker: {len(samples)} sample(s) had a non-finite loss or logits (NaN or inf), first: "
            f"{samples[:10].tolist()}; they score NaN in {per_proxy} rather than a number that would rank them. "
            f"Lower the learning rate, or check these samples' inputs and labels")


def left_out_report(left_out: dict[str, np.ndarray], eval_at: list[int]) -> str:
    """One warning for `scores()`: samples an eval pass did not cover score NaN in the proxies
    reading that pass (csl_eval would otherwise sum the other passes, or score 0)."""
    samples = np.unique(np.concatenate(list(left_out.values())))
    per_proxy = ", ".join(f"{label} ({len(idx)})" for label, idx in left_out.items())
    return (f"SampleTracker: {len(samples)} sample(s) were left out of eval_epoch passes (first: "
            f"{samples[:10].tolist()}; passes after epochs {eval_at}); they score NaN in {per_proxy}. Pass every "
            f"sample to eval_epoch: (x, y) tensors of all n, or a loader over the whole training set without "
            f"drop_last")


def absent_report(presented: np.ndarray, epochs: int) -> str | None:
    """One warning for `scores()` when some samples missed some epochs (`presented`: epochs each
    sample was presented in): csl sums over the epochs a sample was presented in, so a missed epoch
    lowers it with no sign in the score -- drop_last, a sampler with replacement or over a subset,
    a fit cut short or resumed without the tracker's state, or n larger than the dataset."""
    never, fewer = np.flatnonzero(presented == 0), np.flatnonzero((presented > 0) & (presented < epochs))
    cases = ((fewer, f"were presented in fewer than all {epochs} epochs"), (never, "were never presented"))
    parts = [f"{len(found)} sample(s) {what} (first: {found[:10].tolist()})" for found, what in cases if len(found)]
    if not parts:
        return None
    return (f"SampleTracker: {' and '.join(parts)}: csl sums the losses of the epochs a sample was presented in, "
            f"so it is lower for that reason alone (never presented: csl 0, the other proxies NaN). drop_last=True, "
            f"a sampler with replacement or over a subset, an epoch cut short, or n larger than the dataset do this; "
            f"epochs_presented() gives each sample's count")


def unread_report(unread: dict[str, np.ndarray]) -> str:
    """One warning for `scores()`: samples that were presented yet score NaN in a proxy that reads
    only some epochs (el2n: its early window), because they were absent from all of those."""
    samples = np.unique(np.concatenate(list(unread.values())))
    per_proxy = ", ".join(f"{label} ({len(idx)})" for label, idx in unread.items())
    return (f"SampleTracker: {len(samples)} presented sample(s) score NaN in {per_proxy} (first: "
            f"{samples[:10].tolist()}): these proxies read only some epochs (el2n: its early window, the "
            f"first el2n.window fraction of them, 0.1 by default) and the samples were presented in none of those. "
            f"drop_last=True, a sampler with replacement or over a subset do this; epochs_presented() gives each "
            f"sample's count")


def nullable(labels: np.ndarray) -> pd.arrays.IntegerArray:
    """Class ids with -1 (never seen) as <NA>."""
    labels = np.asarray(labels, dtype=np.int64)
    return pd.arrays.IntegerArray(np.where(labels < 0, 0, labels), labels < 0)


def as_uint8_nchw(images: Any, n: int) -> np.ndarray:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if len(x) != n:
        raise HarnessError(f"plot_suspects(): images must hold all {n} samples in index order, got {len(x)}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise HarnessError(f"plot_suspects(): images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in "
                           f"(1, 3), got {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float64)
        low, high = np.nanmin(x), np.nanmax(x)
        x = np.rint((x - low) / (high - low if high > low else 1.0) * 255).astype(np.uint8)
    return x


def check_png_path(path: str | Path) -> Path:
    """The suspects' grid is written as PNG: a path named .pdf or .svg would hold PNG bytes."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise HarnessError(f"plot_suspects(path=...) writes a PNG image; name it *.png, got {str(path)!r}")
    return path


def draw_suspects(table: pd.DataFrame, pictures: np.ndarray, by: str, path: str | Path,
                  classes: Sequence[str] | None, columns: int) -> Path:
    """PNG grid of the suspects in `table` (`harness.plots.plot_suspects`, imported here so that the
    tracker loads matplotlib only when it draws)."""
    from harness.plots import plot_suspects

    return plot_suspects(table, pictures, by, path, classes, columns)
