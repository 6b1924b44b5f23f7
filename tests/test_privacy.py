"""Privacy: per-sample vulnerability from in/out Gaussians of φ, the leave-one-model-out LiRA
attack, and the privacy task on the memorization task's stability runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from baselines.privacy import (
    GaussianFit,
    attack_metrics,
    empirical_auroc,
    fit_gaussians,
    gaussian_auroc,
    lira_scores,
    vulnerability,
)
from harness.errors import HarnessError


def _shifted(k: int, n: int, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """φ_ki = b_i + ε_ki + shift·[k trained on i], b_i ~ N(0, 3²), ε ~ N(0, 1), half the models
    train on each sample: a per-sample offset no global threshold can remove, and an in/out gap
    of `shift` standard deviations."""
    rng = np.random.default_rng(seed)
    members = np.zeros((k, n), dtype=bool)
    for j in range(k):
        members[j, rng.permutation(n)[: n // 2]] = True
    phi = rng.normal(0, 3, n) + rng.normal(0, 1, (k, n)) + shift * members
    return phi, members


def test_closed_form_auroc_matches_monte_carlo() -> None:
    mu_in, sd_in = np.array([1.0, 0.0, 3.0, -1.0]), np.array([1.0, 2.0, 0.5, 1.5])
    mu_out, sd_out = np.array([0.0, 0.0, 1.0, 2.0]), np.array([1.0, 0.5, 2.0, 1.0])
    ones = np.ones(4, dtype=int)
    v = gaussian_auroc(GaussianFit(mu_in, sd_in, mu_out, sd_out, ones, ones))
    rng = np.random.default_rng(0)
    draws = 400_000
    x_in = rng.normal(mu_in, sd_in, (draws, 4))
    x_out = rng.normal(mu_out, sd_out, (draws, 4))
    mc = (x_in > x_out).mean(0)
    np.testing.assert_allclose(v, mc, atol=4 * np.sqrt(0.25 / draws))  # 4 binomial SEs
    assert v[1] == pytest.approx(0.5)


def test_fit_floors_sigma_and_pools_fixed_variance() -> None:
    phi = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 7.0], [10.0, 9.0]])
    members = np.array([[1, 1], [1, 1], [0, 1], [0, 0]], dtype=bool)
    fit = fit_gaussians(phi, members, sigma_floor=0.1)
    np.testing.assert_allclose(fit.mu_in, [2.0, 17 / 3])
    np.testing.assert_allclose(fit.sigma_in, [np.sqrt(2.0), np.std([5, 5, 7], ddof=1)])
    np.testing.assert_allclose(fit.mu_out, [6.0, 9.0])
    # sample 1 has one out-model: no spread, so sigma is the floor
    np.testing.assert_allclose(fit.sigma_out, [np.std([2, 10], ddof=1), 0.1])
    # pooled: sum of squared deviations over samples / sum of (count - 1)
    fixed = fit_gaussians(phi, members, sigma_floor=0.1, fixed_variance=True)
    pooled_in = np.sqrt((2.0 + np.var([5, 5, 7]) * 3) / (1 + 2))
    pooled_out = np.sqrt(32.0 / 1)
    np.testing.assert_allclose(fixed.sigma_in, [pooled_in, pooled_in])
    np.testing.assert_allclose(fixed.sigma_out, [pooled_out, pooled_out])
    with pytest.raises(HarnessError, match="sigma_floor"):
        fit_gaussians(phi, members, sigma_floor=0.0)


def test_never_held_out_sample_has_no_vulnerability() -> None:
    phi, members = _shifted(20, 30, 1.0)
    members[:, 3] = True  # every model trained on sample 3
    members[:, 7] = False  # no model did on sample 7
    for method in ("gaussian", "empirical"):
        v = vulnerability(phi, members, method)
        assert np.isnan(v[[3, 7]]).all()
        assert np.isfinite(np.delete(v, [3, 7])).all()
    scores = lira_scores(phi, members)
    assert np.isnan(scores[:, [3, 7]]).all()


def test_empirical_auroc_is_per_sample_roc_auc() -> None:
    phi, members = _shifted(12, 25, 0.7, seed=3)
    phi = np.round(phi)  # ties between in- and out-values count one half
    got = empirical_auroc(phi, members)
    want = [roc_auc_score(members[:, i], phi[:, i]) for i in range(25)]
    np.testing.assert_allclose(got, want)


def test_lira_refits_without_the_scored_model() -> None:
    """Score of pair (k, i) = log-likelihood ratio under Gaussians fitted on the other models."""
    phi, members = _shifted(10, 6, 1.5, seed=1)
    scores = lira_scores(phi, members, sigma_floor=0.1)
    for k, i in [(0, 0), (4, 2), (9, 5)]:
        others = np.arange(10) != k
        x_in = phi[others & members[:, i], i]
        x_out = phi[others & ~members[:, i], i]
        want = (stats.norm.logpdf(phi[k, i], x_in.mean(), max(x_in.std(ddof=1), 0.1))
                - stats.norm.logpdf(phi[k, i], x_out.mean(), max(x_out.std(ddof=1), 0.1)))
        assert scores[k, i] == pytest.approx(want)


@pytest.mark.parametrize("fixed_variance", [False, True])
def test_lira_recovers_a_known_shift(fixed_variance: bool) -> None:
    """In-models shifted by d = 2 noise standard deviations. With the per-sample Gaussians known,
    the likelihood ratio is monotone in φ − b_i, so the attack is the test of N(d, 1) against
    N(0, 1): AUROC = Φ(d/√2), TPR at FPR α = Φ(d − z_{1−α}); and every sample's vulnerability is
    Φ(d/√2). With 100 models per group the fitted Gaussians are close to the true ones."""
    d = 2.0
    phi, members = _shifted(200, 500, d)
    result = attack_metrics(lira_scores(phi, members, fixed_variance=fixed_variance), members)
    assert result.pairs == phi.size
    assert result.auroc == pytest.approx(stats.norm.cdf(d / np.sqrt(2)), abs=0.01)
    assert result.tpr_at[0.01] == pytest.approx(stats.norm.cdf(d - stats.norm.ppf(0.99)), abs=0.03)
    assert result.tpr_at[0.001] == pytest.approx(stats.norm.cdf(d - stats.norm.ppf(0.999)), abs=0.04)
    v = vulnerability(phi, members, fixed_variance=fixed_variance)
    assert np.mean(v) == pytest.approx(stats.norm.cdf(d / np.sqrt(2)), abs=0.01)
    # no shift: nothing leaks
    null = attack_metrics(lira_scores(*_shifted(40, 200, 0.0, seed=2)), _shifted(40, 200, 0.0, seed=2)[1])
    assert null.auroc == pytest.approx(0.5, abs=0.02)


def test_attack_tpr_at_fpr_by_hand() -> None:
    # 4 members, 10 non-members; one non-member outscores everyone (FPR 0.1 at its threshold)
    scores = np.array([5.0, 4.0, 3.0, 0.5] + [6.0] + [0.0] * 9)
    members = np.array([True] * 4 + [False] * 10)
    result = attack_metrics(scores, members)
    assert result.tpr_at[0.01] == 0.0  # below FPR 0.1 no threshold catches a member
    assert result.auroc == pytest.approx(roc_auc_score(members, scores))
    nan_scores = np.where(np.arange(14) == 4, np.nan, scores)  # NaN pairs are dropped
    dropped = attack_metrics(nan_scores, members)
    assert dropped.pairs == 13 and dropped.tpr_at[0.01] == 1.0 and dropped.auroc == 1.0
