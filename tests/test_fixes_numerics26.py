"""Fixes found by the numerics26 check of the printed numbers against methods.md; each test fails
on the code before its fix."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.bootstrap import Resamples
from harness.metrics import detection_metrics, weighted_detection
from harness.tasks.privacy import all_proxy_metrics


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


V_TIED = np.array([0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.55, 0.45])
S_TIED = np.array([5, 1, 3, 2, 0, 1, 2, 0, 1, 4, 3, 2.0])


def _expected_flag_metrics() -> tuple[float, float]:
    """Top 25 % of 12 = 3 places: 0.9 and two of the three 0.8s, each choice equally likely."""
    aucs, aps = [], []
    for pick in itertools.combinations([1, 2, 3], 2):
        flag = np.zeros(12, dtype=bool)
        flag[[0, *pick]] = True
        aucs.append(roc_auc_score(flag, S_TIED))
        aps.append(average_precision_score(flag, S_TIED))
    return float(np.mean(aucs)), float(np.mean(aps))


def test_privacy_flag_auprc_is_its_expectation_over_boundary_tie_breaks() -> None:
    """The AUPRC is not linear in the flags: that of the fractional flags (2/3 of each tied sample)
    read 0.5667 where the mean over the three equally likely flag sets is 0.5905 (methods.md: ties
    are broken at random, the metric its expected value)."""
    auroc, auprc = _expected_flag_metrics()
    points, _ = all_proxy_metrics(V_TIED, {"p": S_TIED}, 0.25, None)
    assert points["p"]["auroc"][0] == pytest.approx(auroc, abs=1e-12)
    assert points["p"]["auprc"][0] == pytest.approx(auprc, abs=0.01)  # Monte Carlo over 1,024 draws
    assert auprc - 0.5667 > 0.02


def test_privacy_bootstrap_auprc_takes_one_tie_break_per_resample() -> None:
    """Each bootstrap replicate is the AUPRC of one flag set of its resampled multiset: at unit weights
    in every row, one of the three equally likely values, each about a third of the time."""
    auroc, _ = _expected_flag_metrics()
    values = []
    for pick in itertools.combinations([1, 2, 3], 2):
        flag = np.zeros(12, dtype=bool)
        flag[[0, *pick]] = True
        values.append(average_precision_score(flag, S_TIED))
    resamples = Resamples(np.ones((600, 12), dtype=np.uint16))
    _, reps = all_proxy_metrics(V_TIED, {"p": S_TIED}, 0.25, resamples)
    got = reps["p"]["auprc"]
    hits = [np.isclose(got, x).mean() for x in values]
    assert sum(hits) == pytest.approx(1.0) and min(hits) > 0.25
    np.testing.assert_allclose(reps["p"]["auroc"], auroc)


def test_privacy_auprc_without_a_boundary_tie_is_unchanged() -> None:
    v = np.linspace(0, 1, 30)
    s = np.random.default_rng(2).random(30)
    points, _ = all_proxy_metrics(v, {"p": s}, 0.1, None)
    flag = v >= v[-3]
    assert points["p"]["auprc"][0] == pytest.approx(average_precision_score(flag, s), abs=1e-12)


def test_lira_tpr_at_an_fpr_below_one_negative_is_said_to_be_at_zero_false_positives() -> None:
    """442 non-member pairs (a real tiny run's count): FPR <= 0.1 % allows no false positive, so the
    reported lira_tpr@0.001fpr is the TPR at zero false positives; 1 % allows 4 and is not named."""
    from harness.tasks.privacy import few_negatives_warning

    members = np.ones((2, 700), dtype=bool)
    members.ravel()[:442] = False
    lira = np.random.default_rng(0).normal(size=members.shape)
    with pytest.warns(UserWarning, match=r"442 non-member .*lira_tpr@0\.001fpr to allow one") as caught:
        few_negatives_warning(lira, members)
    assert "0.01fpr" not in str(caught[0].message)
    members.ravel()[:1000] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        few_negatives_warning(lira, members)  # 1,000 pairs: one false positive fits in 0.1 %
