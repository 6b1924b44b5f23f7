"""The suspects figure names the suggested label (the final model repeats a memorised wrong label)
and the duplicates figure marks a mirrored pair: both are what the CSVs say, on the picture."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.test_figure_captions17 import drawn  # noqa: F401  (the fixture)


def _images(n: int) -> dict[int, np.ndarray]:
    return {i: np.full((3, 4, 4), 10 * i, dtype=np.uint8) for i in range(n)}


def test_a_suspect_caption_gives_the_suggested_label(tmp_path, drawn) -> None:  # noqa: F811
    from harness.plots import plot_suspects

    table = pd.DataFrame({"index": [2, 0, 1], "label": [0, 1, 2], "predicted": [0, 1, 2],
                          "suggested": [1.0, np.nan, 0.0], "score": [3.0, 2.0, 1.0]})
    plot_suspects(table, _images(3), "csl", tmp_path / "s.png", ["cat", "dog", "ship"], 3)
    firsts = [c.split("\n")[0] for _, c in drawn["s.png"]]
    assert firsts == ["#2 cat->cat (dog?)", "#0 dog->dog", "#1 ship->ship (cat?)"]


def test_a_suspect_caption_without_suggestions_is_as_before(tmp_path, drawn) -> None:  # noqa: F811
    from harness.plots import plot_suspects

    table = pd.DataFrame({"index": [1], "label": [0], "predicted": [1], "score": [3.0]})
    plot_suspects(table, _images(2), "csl", tmp_path / "s.png", ["cat", "dog"], 3)
    assert drawn["s.png"][0][1] == "#1 cat->dog\n3"


def test_a_mirrored_pair_says_so_under_its_distance(tmp_path, drawn) -> None:  # noqa: F811
    from harness.plots import plot_pairs

    pairs = pd.DataFrame({"a": [0, 2], "b": [1, 3], "distance": [0.01, 0.02], "mirrored": [True, False],
                          "label_a": [0, 1], "label_b": [0, 1]})
    plot_pairs(pairs, _images(4), tmp_path / "p.png", ["cat", "dog"], 4)
    captions = [c for _, c in drawn["p.png"]]
    assert captions == ["#0 cat\n", "#1 cat\nd=0.01 mirrored", "#2 dog\n", "#3 dog\nd=0.02"]
