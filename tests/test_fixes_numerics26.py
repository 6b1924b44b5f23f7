"""Fixes found by the numerics26 check of the printed numbers against methods.md; each test fails
on the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import detection_metrics, weighted_detection


@pytest.mark.parametrize("scores", [[np.inf, np.nan, np.inf, -np.inf, np.nan, np.inf],
                                    [np.inf] * 6])
def test_bootstrap_replicates_rank_infinite_scores_as_the_point_estimate_does(scores) -> None:
    """Scores of only +-inf (and NaN) still rank the samples: the point estimate gave an AUROC while
    every bootstrap replicate was NaN, so the interval was blank beside a number."""
    positives = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    s = np.array(scores)
    point = detection_metrics(positives, s)
    once = weighted_detection(positives, s, np.ones((1, 6)), integral=True)
    for metric, value in point.items():
        assert once[metric][0] == pytest.approx(value)
    assert point["auroc"] == (0.5 if np.isinf(s).all() else 1.0)  # three +inf positives over the rest
