"""The duplicates figures mark a pair only the shifted search found (`shifted`, integrate27), as they
mark a mirrored one: its distance is the interiors' at the best shift, not the whole images'."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.test_figure_captions17 import drawn  # noqa: F401  (the fixture)


def _images(n: int) -> dict[int, np.ndarray]:
    return {i: np.full((3, 4, 4), 10 * i, dtype=np.uint8) for i in range(n)}


def test_a_shifted_pair_says_so_under_its_distance(tmp_path, drawn) -> None:  # noqa: F811
    from harness.plots import plot_pairs

    pairs = pd.DataFrame({"a": [0, 2, 4], "b": [1, 3, 5], "distance": [0.01, 0.02, 0.03],
                          "mirrored": [False, True, False], "shifted": [True, False, False],
                          "label_a": [0, 1, 0], "label_b": [0, 1, 0]})
    plot_pairs(pairs, _images(6), tmp_path / "p.png", ["cat", "dog"], 6)
    captions = [c for _, c in drawn["p.png"]]
    assert captions == ["#0 cat\n", "#1 cat\nd=0.01 shifted", "#2 dog\n", "#3 dog\nd=0.02 mirrored",
                        "#4 cat\n", "#5 cat\nd=0.03"]


def test_a_shifted_test_copy_says_so_in_the_test_split_figure(tmp_path, drawn) -> None:  # noqa: F811
    from harness.plots import plot_pairs

    pairs = pd.DataFrame({"a": [7], "b": [2], "distance": [0.004], "mirrored": [False], "shifted": [True],
                          "label_a": [1], "label_b": [1]})
    plot_pairs(pairs, _images(3), tmp_path / "t.png", ["cat", "dog"], 4, pictures_a={7: _images(8)[7]},
               names=("test", "train"))
    assert [c for _, c in drawn["t.png"]] == ["test #7 dog\n", "train #2 dog\nd=0.004 shifted"]
