"""Figures for the theory-validation task and for looking at extreme samples and suspects.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas instead of pyplot:
no display is ever touched (headless servers, CI), no global figure registry grows across a long
experiment, and the process-wide backend of whoever imports this module is left alone. Every
writer saves to a temporary file in the target directory and renames it into place, so an
interrupted run never leaves a truncated PNG that looks finished.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.io import atomic_write

if TYPE_CHECKING:  # matplotlib is imported by the first figure: ~0.5 s that a run without figures need not pay
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

BINNED_COLUMNS = ["bin_left", "bin_right", "bin_center", "mean", "std", "count"]


def new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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


def binned_relation(x: np.ndarray, y: np.ndarray, bins: int = 20, keep_empty: bool = False) -> pd.DataFrame:
    """Mean and std of y over ``bins`` equal-width bins of x (paper Figs. 3-8).

    Bins are half-open [left, right) except the last, which includes max(x), as in
    ``np.histogram``. ``std`` is the population std (ddof=0), so a one-sample bin reads 0
    rather than NaN. Empty bins are dropped (kept with NaN mean and std with ``keep_empty``, so a
    figure can leave a gap there instead of drawing a line across x values no sample has);
    non-finite pairs are ignored.
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
            "mean": np.where(used, mean, np.nan),
            "std": np.where(used, std, np.nan),
            "count": count,
        }
    )
    return frame if keep_empty else frame[used].reset_index(drop=True)


def plot_binned(
    x: np.ndarray,
    y: np.ndarray,
    xlabel: str,
    ylabel: str,
    path: str | Path,
    bins: int = 20,
    title: str = "",
) -> Path:
    """PNG of the bin means of y against the bin centers of x, each with a ±std error bar.

    The line breaks at empty bins (it would otherwise claim a mean where no sample is), and the
    std is a bar per bin rather than a band, which an isolated bin between empty ones would
    reduce to nothing."""
    table = binned_relation(x, y, bins=bins, keep_empty=True)
    fig = new_figure((5.0, 3.5))
    ax = fig.add_subplot()
    c, m, s = (table[k].to_numpy() for k in ("bin_center", "mean", "std"))
    used = table["count"].to_numpy() > 0
    ax.plot(c, m, marker="o", markersize=3, label="bin mean")
    ax.errorbar(c[used], m[used], yerr=s[used], fmt="none", ecolor="C0", alpha=0.5, capsize=2, label="± std")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    return save_figure(fig, path)


def histogram_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin edges over the values; for values on a lattice (learning time is k/E) the
    edges fall halfway between lattice points and every bin holds the same number of them. Plain
    equal-width bins would leave bins between lattice values empty (E = 40 of 50 bins: a gap every
    4 or 5 bars) or hold 1 or 2 values each (E = 60: bars 1x and 2x high), a comb of empty or tall
    bars that reads as structure."""
    u = np.unique(values)
    if u.size >= 2:
        step = float(np.min(np.diff(u)))
        points = (u - u[0]) / step
        n = int(np.rint(points[-1])) + 1
        if n <= 100 * bins and np.allclose(points, np.rint(points), rtol=0, atol=1e-6):
            per = -(-n // bins)
            # the last bin ends at the last lattice point: when per does not divide n it holds
            # fewer points, and its width says so
            return u[0] + step * (np.minimum(per * np.arange(-(-n // per) + 1), n) - 0.5)
    return np.histogram_bin_edges(values, bins=bins)


def plot_histogram(values: np.ndarray, xlabel: str, path: str | Path, bins: int = 50, title: str = "") -> Path:
    """PNG histogram of the finite values (e.g. CSL, learning time: bimodality, long tail), in at
    most ``bins`` bins (``histogram_edges``)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    fig = new_figure((5.0, 3.5))
    ax = fig.add_subplot()
    edges = histogram_edges(values, bins) if values.size else bins
    ax.hist(values, bins=edges)  # type: ignore[arg-type]  # an array of edges: matplotlib takes it, its stubs omit it
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title, fontsize=9)
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
    if title is not None:  # as written: a pair of `$` in a file or class name was math to matplotlib, a crash
        ax.set_title(title, fontsize=6, pad=2, parse_math=False)
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class _Grid:
    """A drawn extreme-image grid kept for the next call with the same layout: its cells'
    axes and images, in the order `plot_extreme_images` fills them."""

    fig: Figure
    cells: list[tuple[Axes, AxesImage]]


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

    Each image is captioned ``#index: score``, the index to find it in scores/*.csv; NaN scores
    are skipped, and classes with fewer images than per_class leave the remaining cells blank.
    A second grid of the same layout (classes, images per class, image shape, and which cells are
    filled) reuses the first's figure with its images and captions replaced: the same picture,
    without building the axes again.
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
                ax.set_title(_caption(i, scores), fontsize=6, pad=2)
        return save_figure(grid.fig, path)


def _caption(i: int, scores: np.ndarray) -> str:
    """A grid cell's caption: the sample's index (to find it in scores/*.csv) and its score."""
    return f"#{i}: {scores[i]:.3g}"


def _draw_grid(images: np.ndarray, scores: np.ndarray, classes: Sequence[str], picks: list, per_class: int) -> _Grid:
    n_cls = len(classes)
    fig = new_figure((2 * per_class * 0.9 + 1.2, n_cls * 0.8 + 0.6))  # room for "#49999: 0.716"
    blocks = fig.subfigures(1, 2, squeeze=False, wspace=0.05)[0]
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
                    show_image(ax, images[chosen[j]], _caption(chosen[j], scores))
                    cells.append((ax, ax.images[-1]))
                else:  # blank cell; keep the axes so the row's class label stays visible
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(False)
            axes[c, 0].set_ylabel(str(name), fontsize=7, rotation=0, ha="right", va="center")
    return _Grid(fig, cells)


def plot_suspects(table: pd.DataFrame, pictures: np.ndarray | Mapping[int, np.ndarray], by: str, path: str | Path,
                  classes: Sequence[str] | None, columns: int, files: Mapping[int, str] | None = None) -> Path:
    """PNG grid of the suspects in `table` (index, label, predicted, score; optional suggested),
    captioned `#index given->predicted` (with ` (suggested?)` when the table suggests a label: the
    final model repeats a memorised wrong label), the sample's file when `files` names it, and the
    score: the tracker's `plot_suspects` and the suspects task's figure. The file is what a reader
    of the figure goes to open or fix; the index alone sent them to look it up in suspects.csv first.
    `pictures[i]` is sample i's (C, H, W) uint8 image: all of them, or those of the table's samples."""
    def name(c: Any) -> str:
        return "?" if pd.isna(c) else (classes[int(c)] if classes is not None else str(int(c)))

    def suggested(r: pd.Series) -> str:
        return f" ({name(r['suggested'])}?)" if "suggested" in r and not pd.isna(r["suggested"]) else ""

    captions = [f"#{int(r['index'])} {name(r['label'])}->{name(r['predicted'])}{suggested(r)}\n"
                + _file_line(files, int(r["index"])) + f"{r['score']:.3g}" for _, r in table.iterrows()]
    fig, axes = captioned_grid(len(table), columns, captions, f"top {len(table)} by {by}")
    for cell, ax in enumerate(axes.flat):
        if cell < len(table):
            show_image(ax, pictures[int(table.iloc[cell]["index"])], captions[cell])
        else:
            ax.set_axis_off()
    return save_figure(fig, path)


#: Caption geometry of the image grids, in inches: one 6-pt line (matplotlib's 1.2 line spacing), the
#: room under the caption and between columns, the figure title's room, and the inches per caption
#: character (~0.055 at 6 pt, with a margin: "automobile->airplane" overlapped its neighbour at 1.1 in).
CAPTION_LINE_IN, CAPTION_GAP_IN, COLUMN_GAP_IN, TITLE_IN, CAPTION_CHAR_IN = 6 * 1.2 / 72, 0.06, 0.1, 0.3, 0.065


def captioned_grid(cells: int, columns: int, captions: Sequence[str], title: str) -> tuple[Figure, Any]:
    """A figure of `cells` square image cells in rows of `columns`, each row with room above it for
    its tallest caption. Rows are spaced by the captions' own height: a fixed 1.3 in a row gave images 1.7 in wide
    once file names widened the cells, and each three-line caption ran into the image above it."""
    rows = max(1, math.ceil(cells / columns))
    width = max([1.1] + [CAPTION_CHAR_IN * len(line) for c in captions for line in c.split("\n")])
    side = width - COLUMN_GAP_IN  # the image; a caption may use its column gap
    caption = max([1] + [len(c.split("\n")) for c in captions]) * CAPTION_LINE_IN + CAPTION_GAP_IN
    height = TITLE_IN + rows * (caption + side)
    fig = new_figure((columns * width - COLUMN_GAP_IN, height))
    fig.suptitle(title, fontsize=8, y=1 - 0.05 / height, va="top")
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw={
        "left": 0, "right": 1, "bottom": 0, "top": 1 - (TITLE_IN + caption) / height,
        "hspace": caption / side, "wspace": COLUMN_GAP_IN / side})
    return fig, axes


#: The longest file name a caption shows; longer ones keep their end (the file's own name), after "...".
FILE_CAPTION_CHARS = 28


def _file_line(files: Mapping[int, str] | None, i: int) -> str:
    """Sample i's file as a caption line (with its newline), or nothing when the files are unknown."""
    if not files or files.get(i) is None:
        return ""
    name = str(files[i])
    return (name if len(name) <= FILE_CAPTION_CHARS else "..." + name[3 - FILE_CAPTION_CHARS:]) + "\n"


def plot_pairs(pairs: pd.DataFrame, pictures: Mapping[int, np.ndarray], path: str | Path,
               classes: Sequence[str] | None, columns: int, total: int | None = None,
               pictures_a: Mapping[int, np.ndarray] | None = None, names: tuple[str, str] | None = None,
               files: Mapping[int, str] | None = None, files_a: Mapping[int, str] | None = None) -> Path:
    """PNG grid of duplicate pairs (a, b, label_a, label_b, distance), the two images of a pair side
    by side, captioned `#index label`, the sample's file when `files` names it, and the pair's
    distance (and `mirrored` when one is the other's mirror, `shifted` when only the shifted search found
    it, its distance then the interiors'): the suspects task's duplicates figures.
    `total`: how many pairs were found, when `pairs` are the first of them (the title says so: the
    first 20 of CIFAR-10's 124 pairs were titled "20 duplicate pair(s)"). Pairs across two sets (a
    test sample and its training copy) take a's images and files from `pictures_a` and `files_a`, and
    the sets' `names`, which the captions and the title carry."""
    def caption(side: int, i: int, c: Any, r: Any) -> str:
        name = classes[int(c)] if classes is not None else str(int(c))
        which = f"{names[side]} " if names else ""
        known = files_a if side == 0 and pictures_a is not None else files
        how = "".join(f" {flag}" for flag in ("mirrored", "shifted") if bool(getattr(r, flag, False)))
        return f"{which}#{i} {name}\n" + _file_line(known, i) + (f"d={r.distance:.2g}{how}" if side else "")

    drawn = [[caption(side, int(i), c, r) for side, (i, c) in enumerate(((r.a, r.label_a), (r.b, r.label_b)))]
             for r in pairs.itertuples(index=False)]
    per_row = max(1, columns // 2)
    shown = f"the first {len(pairs)} of {total}" if total is not None and total > len(pairs) else f"{len(pairs)}"
    across = f" ({names[0]}, {names[1]})" if names else ""
    captions = [c for pair in drawn for c in pair]
    fig, axes = captioned_grid(len(captions), per_row * 2, captions,
                               f"{shown} duplicate pair(s){across}, different labels first (d = 1 - pixel correlation)")
    for ax in axes.flat:
        ax.set_axis_off()
    for cell, (r, pair) in enumerate(zip(pairs.itertuples(index=False), drawn, strict=True)):
        row, col = divmod(cell, per_row)
        for side, i in enumerate((r.a, r.b)):
            shown_from = pictures_a if side == 0 and pictures_a is not None else pictures
            show_image(axes[row, 2 * col + side], shown_from[int(i)], pair[side])
    return save_figure(fig, path)
