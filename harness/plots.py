"""Figures for the theory-validation task and for looking at extreme samples.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas instead of pyplot:
no display is ever touched (headless servers, CI), no global figure registry grows across a long
experiment, and the process-wide backend of whoever imports this module is left alone. Every
writer saves to a temporary file in the target directory and renames it into place, so an
interrupted run never leaves a truncated PNG that looks finished.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.errors import HarnessError
from harness.io import atomic_write

BINNED_COLUMNS = ["bin_left", "bin_right", "bin_center", "mean", "std", "count"]


def new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, so a reader never sees half a figure. The
    figure is not cleared afterwards: no registry holds it, so it is freed with its last reference,
    and clearing rebuilt every axis (a fifth of the time of a grid of images)."""
    return atomic_write(path, lambda p: fig.savefig(p, format="png", bbox_inches="tight"))


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise HarnessError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def binned_relation(x: np.ndarray, y: np.ndarray, bins: int = 20) -> pd.DataFrame:
    """Mean and std of y over ``bins`` equal-width bins of x (paper Figs. 3-8).

    Bins are half-open [left, right) except the last, which includes max(x), as in
    ``np.histogram``. ``std`` is the population std (ddof=0), so a one-sample bin reads 0
    rather than NaN. Empty bins are dropped; non-finite pairs are ignored.
    """
    if bins < 1:
        raise HarnessError(f"bins must be >= 1, got {bins}")
    x, y = _finite_pairs(x, y)
    if x.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in BINNED_COLUMNS})
    edges = np.linspace(x.min(), x.max(), bins + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    total = np.bincount(idx, weights=y, minlength=bins)
    mean = total / np.maximum(count, 1)
    sq = np.bincount(idx, weights=(y - mean[idx]) ** 2, minlength=bins)
    std = np.sqrt(sq / np.maximum(count, 1))
    used = count > 0
    frame = pd.DataFrame(
        {
            "bin_left": edges[:-1],
            "bin_right": edges[1:],
            "bin_center": (edges[:-1] + edges[1:]) / 2,
            "mean": mean,
            "std": std,
            "count": count,
        }
    )
    return frame[used].reset_index(drop=True)


def plot_binned(
    x: np.ndarray,
    y: np.ndarray,
    xlabel: str,
    ylabel: str,
    path: str | Path,
    bins: int = 20,
) -> Path:
    """PNG of the bin means of y against bin centers of x, with a ±std band."""
    table = binned_relation(x, y, bins=bins)
    fig = new_figure((5.0, 3.5))
    ax = fig.add_subplot()
    c, m, s = (table[k].to_numpy() for k in ("bin_center", "mean", "std"))
    ax.fill_between(c, m - s, m + s, alpha=0.25, linewidth=0, label="± std")
    ax.plot(c, m, marker="o", markersize=3, label="bin mean")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    return save_figure(fig, path)


def plot_histogram(values: np.ndarray, xlabel: str, path: str | Path, bins: int = 50) -> Path:
    """PNG histogram of the finite values (e.g. CSL, learning time: bimodality, long tail)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    fig = new_figure((5.0, 3.5))
    ax = fig.add_subplot()
    ax.hist(values, bins=bins)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return save_figure(fig, path)


def _extremes(scores: np.ndarray, members: np.ndarray, per_class: int) -> tuple[list, list]:
    """Indices of the per_class highest and lowest scoring members (ties: lower index first)."""
    members = members[np.isfinite(scores[members])]
    order = members[np.argsort(-scores[members], kind="stable")]
    low = members[np.argsort(scores[members], kind="stable")]
    return list(order[:per_class]), list(low[:per_class])


def _pixels(image: np.ndarray) -> np.ndarray:
    return image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))


def show_image(ax, image: np.ndarray, title: str | None) -> None:
    """Draw one (C, H, W) uint8 image; grayscale when C == 1."""
    if image.shape[0] == 1:
        ax.imshow(_pixels(image), cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(_pixels(image))
    if title is not None:
        ax.set_title(title, fontsize=6, pad=2)
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class _Grid:
    """A drawn extreme-image grid kept for the next call with the same layout: its cells'
    axes and images, in the order `plot_extreme_images` fills them."""

    fig: Figure
    cells: list[tuple[object, object]]  # (axes, its AxesImage)


#: The last extreme-image grid, by layout (classes, images per class, image shape, filled cells):
#: the theory task draws one per seed, and building its ~100 axes cost as much as drawing them.
_GRIDS: dict[tuple, _Grid] = {}
_GRIDS_LOCK = threading.Lock()


def plot_extreme_images(
    images_uint8: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    per_class: int = 5,
) -> Path:
    """PNG grid (paper Figs. 10, 16-17): one row per class, the per_class highest-scoring
    images in a block titled "highest" and the per_class lowest in a block titled "lowest".

    Each image is captioned with its score; NaN scores are skipped, and classes with fewer
    images than per_class leave the remaining cells blank. A second grid of the same layout
    (classes, images per class, image shape, and which cells are filled) reuses the first's
    figure with its images and captions replaced: the same picture, without building the axes
    again.
    """
    images = np.asarray(images_uint8)
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] not in (1, 3):
        raise HarnessError(
            f"images must be uint8 (N, C, H, W) with C in (1, 3), got {images.dtype} {images.shape}"
        )
    if not len(images) == len(labels) == len(scores):
        raise HarnessError(
            f"images, labels and scores must have equal length, got {len(images)}, "
            f"{len(labels)}, {len(scores)}"
        )
    if per_class < 1 or len(classes) < 1:
        raise HarnessError("need per_class >= 1 and at least one class")
    picks = [_extremes(scores, np.flatnonzero(labels == c), per_class) for c in range(len(classes))]
    layout = (tuple(map(str, classes)), per_class, images.shape[1:],
              tuple((len(high), len(low)) for high, low in picks))
    chosen = [i for high_low in picks for block in high_low for i in block]
    with _GRIDS_LOCK:
        grid = _GRIDS.get(layout)
        if grid is None:
            _GRIDS.clear()  # one layout kept: a figure of ~100 axes is a few MB
            grid = _GRIDS[layout] = _draw_grid(images, scores, classes, picks, per_class)
        else:
            for (ax, im), i in zip(grid.cells, chosen, strict=True):
                im.set_data(_pixels(images[i]))
                ax.set_title(f"{scores[i]:.3g}", fontsize=6, pad=2)
        return save_figure(grid.fig, path)


def _draw_grid(images: np.ndarray, scores: np.ndarray, classes: Sequence[str], picks: list, per_class: int) -> _Grid:
    n_cls = len(classes)
    fig = new_figure((2 * per_class * 0.75 + 1.2, n_cls * 0.8 + 0.6))
    blocks = fig.subfigures(1, 2, wspace=0.05)
    grids = []
    for block, title in zip(blocks, ("highest", "lowest"), strict=True):
        block.suptitle(title)
        grids.append(block.subplots(n_cls, per_class, squeeze=False))
    cells = []
    for c, name in enumerate(classes):
        for axes, chosen in zip(grids, picks[c], strict=True):
            for j in range(per_class):
                ax = axes[c, j]
                if j < len(chosen):
                    show_image(ax, images[chosen[j]], f"{scores[chosen[j]]:.3g}")
                    cells.append((ax, ax.images[-1]))
                else:  # blank cell; keep the axes so the row's class label stays visible
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(False)
            axes[c, 0].set_ylabel(str(name), fontsize=7, rotation=0, ha="right", va="center")
    return _Grid(fig, cells)
