"""The image grids leave each caption its own room: with file names in the captions (three lines,
cells widened to the longest line) the rows kept a fixed 1.3-1.4 in, the images grew to the cell's
width, and every caption ran into the image above it (the CIFAR-10 suspects and duplicates figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import harness.plots as plots

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the plotters would save, kept for their rendered geometry."""
    figures: list[Any] = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    return figures


def _boxes(fig: Any) -> tuple[list[Any], list[Any]]:
    """The rendered bounding boxes of every cell's caption and image, in display pixels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    cells = [ax for ax in fig.axes if ax.images]
    return ([ax.title.get_window_extent(renderer) for ax in cells],
            [ax.images[0].get_window_extent(renderer) for ax in cells])


def _overlap(a: Any, b: Any) -> bool:
    """More than touching: a caption sits right on its own image's edge."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


def _assert_apart(fig: Any) -> None:
    captions, images = _boxes(fig)
    assert captions and len(captions) == len(images)
    title = fig.texts[0].get_window_extent(fig.canvas.get_renderer())  # the suptitle
    for i, caption in enumerate(captions):
        hit = [j for j, image in enumerate(images) if _overlap(caption, image)]
        assert not hit, f"caption {i} ({fig.axes[i].get_title()!r}) overlaps image(s) {hit}"
        others = [j for j, other in enumerate(captions) if j != i and _overlap(caption, other)]
        assert not others, f"caption {i} overlaps caption(s) {others}"
        assert not _overlap(caption, title), f"caption {i} overlaps the figure title"
        assert caption.y0 >= images[i].y1 - 0.5, f"caption {i} is not above its own image"


def _suspects(n: int) -> tuple[pd.DataFrame, dict[int, np.ndarray], dict[int, str]]:
    rng = np.random.default_rng(0)
    index = [49447, 13058, 26616, 1, 22, 333, 4444, 5, 60000, 7][:n] + list(range(100, 100 + max(0, n - 10)))
    labels = rng.integers(0, 10, n)
    table = pd.DataFrame({"index": index, "label": labels, "predicted": (labels + 1) % 10,
                          "score": rng.uniform(50, 150, n)})
    pictures = {i: rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for i in index}
    files = {i: f"train/{CLASSES[int(c)]}/{i:05d}.jpg" for i, c in zip(index, labels, strict=True)}
    return table, pictures, files


@pytest.mark.parametrize("with_files", [True, False])
@pytest.mark.parametrize("n", [1, 8, 40])
def test_suspect_captions_never_touch_an_image_or_another_caption(drawn: list[Any], with_files: bool, n: int) -> None:
    table, pictures, files = _suspects(n)
    plots.plot_suspects(table, pictures, "csl", "x.png", CLASSES, columns=8, files=files if with_files else None)
    _assert_apart(drawn[-1])


def test_duplicate_pair_captions_never_touch_an_image_or_another_caption(drawn: list[Any]) -> None:
    rng = np.random.default_rng(1)
    pairs = pd.DataFrame({"a": range(20), "b": range(1000, 1020), "distance": np.linspace(0.008, 0.044, 20),
                          "label_a": rng.integers(0, 10, 20), "label_b": rng.integers(0, 10, 20)})
    pictures = {i: rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for i in [*range(20), *range(1000, 1020)]}
    files = {i: f"train/automobile/{i:05d}.jpg" for i in range(1000, 1020)}
    files_a = {i: f"test/automobile/{i:04d}.jpg" for i in range(20)}
    plots.plot_pairs(pairs, pictures, "x.png", CLASSES, columns=8, total=54, pictures_a=pictures,
                     names=("test", "train"), files=files, files_a=files_a)
    _assert_apart(drawn[-1])


def test_the_images_stay_square_and_as_wide_as_their_longest_caption_line(drawn: list[Any]) -> None:
    """The cell widens with its captions (long class names overlapped the next cell at a fixed 1.1 in)."""
    table, pictures, files = _suspects(8)
    plots.plot_suspects(table, pictures, "csl", "x.png", CLASSES, columns=8, files=files)
    _, images = _boxes(drawn[-1])
    longest = max(len(line) for ax in drawn[-1].axes for line in ax.get_title().split("\n"))
    dpi = drawn[-1].dpi
    for image in images:
        assert image.width == pytest.approx(image.height, abs=1.5)
        assert image.width / dpi == pytest.approx(plots.CAPTION_CHAR_IN * longest - plots.COLUMN_GAP_IN, abs=0.03)
