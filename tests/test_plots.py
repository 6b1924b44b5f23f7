"""Plots write real PNGs atomically; binned_relation equals a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.plots import (
    binned_relation,
    plot_binned,
    plot_extreme_images,
    plot_histogram,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG_MAGIC


def _no_temp_left(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_binned_relation_by_hand() -> None:
    # x spans [0, 4] in 4 bins of width 1: [0,1) [1,2) [2,3) [3,4]; bin [2,3) is empty
    x = np.array([0.0, 0.5, 0.9, 1.5, 3.1, 4.0])
    y = np.array([1.0, 2.0, 6.0, 5.0, 2.0, 4.0])
    table = binned_relation(x, y, bins=4)
    assert list(table.columns) == [
        "bin_left",
        "bin_right",
        "bin_center",
        "mean",
        "std",
        "count",
    ]
    np.testing.assert_allclose(table["bin_left"], [0, 1, 3])
    np.testing.assert_allclose(table["bin_right"], [1, 2, 4])
    np.testing.assert_allclose(table["bin_center"], [0.5, 1.5, 3.5])
    np.testing.assert_allclose(table["mean"], [3.0, 5.0, 3.0])
    np.testing.assert_allclose(table["std"], [np.std([1, 2, 6]), 0.0, 1.0])
    np.testing.assert_array_equal(table["count"], [3, 1, 2])


def test_binned_relation_ignores_nonfinite() -> None:
    table = binned_relation(np.array([0.0, np.nan, 1.0]), np.array([1.0, 5.0, np.inf]), bins=2)
    assert table["count"].sum() == 1


def test_binned_relation_constant_x_and_histogram_counts() -> None:
    # a constant x is one bin of zero width holding every sample, not an error or empty table
    table = binned_relation(np.full(4, 2.0), np.array([1.0, 2.0, 3.0, 4.0]), bins=5)
    assert table[["bin_left", "bin_right", "mean", "count"]].values.tolist() == [[2.0, 2.0, 2.5, 4]]
    assert table["std"].iloc[0] == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0]))
    # values on interior edges and the top edge fall where np.histogram puts them
    rng = np.random.default_rng(3)
    x = np.round(rng.random(400) * 7, 1)
    counts, _ = np.histogram(x, bins=7)
    np.testing.assert_array_equal(binned_relation(x, x, bins=7)["count"], counts[counts > 0])


def test_plot_binned(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random(500)
    out = plot_binned(
        x,
        x**2 + rng.normal(0, 0.1, 500),
        "learning time",
        "memorization",
        tmp_path / "sub" / "binned.png",
    )
    assert out == tmp_path / "sub" / "binned.png" and _is_png(out)
    assert _no_temp_left(out.parent)


def test_plot_histogram(tmp_path: Path) -> None:
    out = plot_histogram(np.random.default_rng(1).gamma(2, size=300), "CSL", tmp_path / "h.png")
    assert _is_png(out) and _no_temp_left(tmp_path)


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_extreme_images(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(30, channels, 8, 8), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 10)
    labels[-7:] = 1  # class 2 has only 3 images: fewer than per_class, cells stay blank
    scores = rng.random(30)
    scores[0] = np.nan
    out = plot_extreme_images(
        images, labels, scores, ["a", "b", "c"], tmp_path / "x" / "e.png", per_class=5
    )
    assert _is_png(out) and _no_temp_left(out.parent)
