"""Privacy: per-sample vulnerability from in/out Gaussians of φ, the leave-one-model-out LiRA
attack, and the privacy task on the memorization task's stability runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from baselines.privacy import (
    GaussianFit,
    attack_metrics,
    empirical_auroc,
    fit_gaussians,
    gaussian_auroc,
    lira_scores,
    vulnerability,
)
from baselines.stability import EVAL_LAST, subset_masks
from harness.config import ExperimentConfig
from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.prepared import prepare
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.tasks import EvalContext, Setting, make_tasks
from harness.tasks.privacy import proxy_metrics


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


# the task ----------------------------------------------------------------------------------------

K_TASK, N_TASK = 10, 300


class _Run:
    """A stored stability run holding only what the task reads."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        assert key == EVAL_LAST.key
        return self._arrays


@pytest.fixture(scope="module")
def task_case():
    """Digits' first 300 samples; K = 10 stability "runs" whose φ rises with membership by a
    per-sample amount `leak` (so v is monotone in leak), plus noise. Model 0 is an old run that
    stored only its probabilities (3 classes carry the mass; φ derives from them)."""
    n = N_TASK
    data = prepare(DataSpec(dataset="digits", subset=n), load_dataset("digits", subset=n), torch.device("cpu"))
    base = RunSpec(data=data.spec, model="mlp", recipe=Recipe(), seed=0)
    task = make_tasks(["privacy"], {"memorization": {"k": K_TASK}})[0]
    specs = task.reference.specs(base)
    members = subset_masks(n, K_TASK, 0.7, 0)
    rng = np.random.default_rng(0)
    leak = np.linspace(0.0, 4.0, n)
    phi = rng.normal(0, 1, (K_TASK, n)) + leak * members
    runs = {spec: _Run({"phi": phi[j][None, :]}) for j, spec in enumerate(specs[1:], start=1)}
    # model 0: probabilities whose phi is phi[0] (p_y = sigmoid(phi), the rest split over two classes)
    p_y = 1 / (1 + np.exp(-phi[0]))
    probs = np.zeros((n, 10), dtype=np.float32)
    labels = data.labels
    probs[np.arange(n), labels] = p_y
    probs[np.arange(n), (labels + 1) % 10] = (1 - p_y) / 2
    probs[np.arange(n), (labels + 2) % 10] = (1 - p_y) / 2
    runs[specs[0]] = _Run({"probs_last": probs})
    return task, data, base, runs, phi, members, leak


def _context(case, tmp_path: Path | None, bootstrap: int) -> EvalContext:
    task, data, base, runs, *_ = case
    cfg = ExperimentConfig(dataset="digits", subset=N_TASK, seeds=(0,), bootstrap=bootstrap, out=tmp_path)
    return EvalContext(setting=Setting("privacy", "clean", data.spec, 0), base=base, data=data, runs=runs,
                       config=cfg, proxies=[], out=tmp_path)


def test_task_rows_against_independent_computation(task_case, tmp_path: Path) -> None:
    task, data, base, runs, phi, members, leak = task_case
    never_out = members.all(0) | (~members).all(0)
    assert never_out.any()  # K = 10 at r = 0.7 leaves some samples in every model
    v = vulnerability(phi, members, sigma_floor=0.1)  # model 0's phi comes back from its probabilities
    keep = np.isfinite(v)
    assert (~keep == never_out).all()
    # a proxy that is v itself where v exists and absurd elsewhere: if the samples without v
    # were not dropped, its Spearman would not be 1
    oracle = np.where(keep, v, -1e6)
    noise = np.random.default_rng(1).normal(size=N_TASK)
    scores = {"oracle": oracle, "noise": noise, "anti": -oracle}
    ctx = _context(task_case, tmp_path, bootstrap=30)
    rows = task.evaluate(ctx, scores)
    got = {(r["proxy"], r["metric"]): r for r in rows}
    assert got["oracle", "spearman"]["value"] == pytest.approx(1.0)
    for name, s in scores.items():
        assert got[name, "spearman"]["value"] == pytest.approx(stats.spearmanr(s[keep], v[keep]).statistic)
        assert got[name, "pearson"]["value"] == pytest.approx(stats.pearsonr(s[keep], v[keep]).statistic)
        flag = np.zeros(keep.sum(), dtype=bool)  # the round(10%) highest v (no ties: v is continuous)
        flag[np.argsort(-v[keep])[: round(0.1 * keep.sum())]] = True
        assert got[name, "auroc"]["value"] == pytest.approx(roc_auc_score(flag, s[keep]))
        assert got[name, "auprc"]["value"] == pytest.approx(average_precision_score(flag, s[keep]))
        boot = got[name, "spearman"]["boot"]
        assert boot.shape == (30,) and np.isfinite(boot).all()
    assert got["oracle", "auroc"]["value"] == 1.0 and got["anti", "auroc"]["value"] == 0.0
    attack = attack_metrics(lira_scores(phi, members), members)
    assert got["reference", "lira_auroc"]["value"] == pytest.approx(attack.auroc, abs=1e-6)
    assert got["reference", "lira_tpr@0.001fpr"]["value"] == pytest.approx(attack.tpr_at[0.001], abs=1e-6)
    assert 0.6 < attack.auroc < 1.0
    assert "boot" not in got["reference", "lira_auroc"]

    figures = ctx.artifacts["figures"]
    assert "figures/privacy_attack_roc_seed0.png" in figures
    assert "figures/privacy_oracle_vs_vulnerability_seed0.png" in figures  # the best Spearman (no csl)
    assert all((tmp_path / f).stat().st_size > 0 for f in figures)
    table = pd.read_csv(tmp_path / ctx.artifacts["privacy"][0])
    np.testing.assert_allclose(table["vulnerability"], v, rtol=1e-6)


def test_flag_ties_at_the_boundary_share_it() -> None:
    """v = [3, 2, 2, 1, 0], top 2 of 5: sample 0 is flagged, samples 1 and 2 each half the time.
    Scores [5, 4, 0, 1, 2]: flag {0, 1} gives AUROC 1, flag {0, 2} gives 3/6; expected 0.75."""
    got = proxy_metrics(np.array([3.0, 2, 2, 1, 0]), np.array([5.0, 4, 0, 1, 2]), np.ones((1, 5)), 0.4)
    assert got["auroc"][0] == pytest.approx(0.75)


def test_task_without_output_folder_writes_nothing(task_case) -> None:
    ctx = _context(task_case, None, bootstrap=0)
    rows = task_case[0].evaluate(ctx, {"noise": np.zeros(N_TASK)})
    assert ctx.artifacts == {}
    assert not any("boot" in r for r in rows)


@pytest.mark.parametrize(("args", "reference", "match"), [
    ({"privacy": {"top": 1.5}}, "stability", "privacy.top"),
    ({"privacy": {"vulnerability": "lira"}}, "stability", "privacy.vulnerability"),
    ({"privacy": {"sigma_floor": 0}}, "stability", "privacy.sigma_floor"),
    ({"privacy": {"fixed_variance": "yes"}}, "stability", "privacy.fixed_variance"),
    ({"privacy": {"topp": 0.1}}, "stability", "topp"),
    ({"memorization": {"k": 2}}, "stability", "k >= 3"),
    ({}, "fz:/nonexistent.npz", "privacy needs --reference stability"),
])
def test_bad_task_arguments(args, reference: str, match: str) -> None:
    with pytest.raises(HarnessError, match=match):
        make_tasks(["privacy"], args, reference=reference)


def test_privacy_beside_memorization_trains_nothing_more(make_config) -> None:
    """The plan of memorization + privacy has the very runs, with the very recorders, of
    memorization alone: the K stability models serve both."""
    common = {"proxies": "csl,final_loss", "subset": 200, "task_args": {"memorization": {"k": 8}}}
    alone = Experiment(make_config(tasks=("memorization",), **common)).plan
    both = Experiment(make_config(tasks=("memorization", "privacy"), **common)).plan
    assert both.runs == alone.runs
    assert len(alone.runs) == 1 + 8
    assert {s.task for _, s, _ in both.settings} == {"memorization", "privacy"}


def test_end_to_end_on_trained_stability_models(make_config) -> None:
    """A tiny real run: the stability models record φ, the task turns it into rows, figures and
    the per-sample table, and the experiment lists them among its outputs."""
    cfg = make_config(tasks=("privacy",), proxies="csl,final_loss", subset=150, bootstrap=20,
                      task_args={"memorization": {"k": 4}})
    result = Experiment(cfg).run()
    rows = result.raw[result.raw.task == "privacy"]
    reference = rows[rows.proxy == "reference"].set_index("metric")["value"]
    assert 0.0 <= reference["lira_tpr@0.001fpr"] <= reference["lira_tpr@0.01fpr"] <= 1.0
    assert 0.3 < reference["lira_auroc"] < 1.0
    assert set(rows[rows.proxy == "csl"].metric) == {"pearson", "spearman", "auroc", "auprc"}
    table = pd.read_csv(cfg.out / "privacy" / "vulnerability_seed0.csv")
    assert len(table) == 150 and table["vulnerability"].isna().sum() == ((table.n_in == 0) | (table.n_out == 0)).sum()
    summary = (cfg.out / "summary.json").read_text()
    assert "figures/privacy_attack_roc_seed0.png" in summary and "privacy/vulnerability_seed0.csv" in summary


def test_a_top_fraction_flagging_every_sample_warns(task_case) -> None:
    """privacy.top 0.999 of the ~280 samples with a vulnerability rounds to all of them: no
    negatives, so the flag AUROC is NaN, and a warning says why and what to change."""
    _, data, base, runs, *_ = task_case
    task = make_tasks(["privacy"], {"memorization": {"k": K_TASK}, "privacy": {"top": 0.999}})[0]
    with pytest.warns(UserWarning, match="privacy.top 0.999 flags all .* lower privacy.top"):
        rows = task.evaluate(_context(task_case, None, bootstrap=0), {"noise": np.zeros(N_TASK)})
    assert np.isnan({r["metric"]: r["value"] for r in rows if r["proxy"] == "noise"}["auroc"])
