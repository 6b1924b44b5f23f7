"""Independent cross-checks (numerics26) of the numbers memprox prints, against methods.md.

Each expected value is computed here from the spec with numpy / scipy / scikit-learn or plain
loops (brute force over tie-breaks, pairs, models), never with the harness helper under test:
first on tiny hand-made inputs, then on one real tiny run (digits, N = 150, 3 epochs, K = 6
stability models) whose stored per-sample arrays are read back as .npy files. These guard the
numbers: they pass on the code as it is and fail if a metric drifts from its definition.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from baselines.privacy import attack_metrics, fit_gaussians, gaussian_auroc, lira_scores
from baselines.stability import stability_memorization
from harness.corruption import inject_duplicates, symmetric_noise
from harness.cost import cost_row
from harness.metrics import detection_metrics, weighted_detection
from harness.plots import binned_relation
from harness.similarity import similarity_metrics
from harness.tasks.privacy import proxy_metrics
from harness.tasks.theory import bimodality_coefficient, skewness


# --- plain references written from methods.md -------------------------------------------------
def auroc_pairs(pos: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney over every (positive, negative) pair, a tie counting 1/2; NaN ranks lowest."""
    s = np.where(np.isnan(s), -np.inf, s)
    total = 0.0
    for a in s[pos]:
        for b in s[~pos]:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (pos.sum() * (~pos).sum())


def expected_precision_at_k(pos: np.ndarray, s: np.ndarray, k: int) -> float:
    """Precision at k averaged over every tie-breaking order (all permutations)."""
    n, hits, count = len(s), 0.0, 0
    for perm in itertools.permutations(range(n)):
        top = sorted(range(n), key=lambda i: (-s[i], perm[i]))[:k]
        hits += pos[top].sum()
        count += 1
    return hits / count / k


def stability_by_hand(correct: np.ndarray, members: np.ndarray) -> np.ndarray:
    out = np.full(correct.shape[1], np.nan)
    for i in range(correct.shape[1]):
        inn, out_ = correct[members[:, i], i], correct[~members[:, i], i]
        if len(inn) and len(out_):
            out[i] = inn.mean() - out_.mean()
    return out


def gaussian(x: np.ndarray, floor: float) -> tuple[float, float]:
    return float(x.mean()), max(float(x.std(ddof=1)) if len(x) > 1 else 0.0, floor)


def vulnerability_by_hand(phi: np.ndarray, members: np.ndarray, floor: float = 0.1) -> np.ndarray:
    v = np.full(phi.shape[1], np.nan)
    for i in range(phi.shape[1]):
        a, b = phi[members[:, i], i], phi[~members[:, i], i]
        if len(a) and len(b):
            (mi, si), (mo, so) = gaussian(a, floor), gaussian(b, floor)
            v[i] = stats.norm.cdf((mi - mo) / math.sqrt(si**2 + so**2))
    return v


def lira_by_hand(phi: np.ndarray, members: np.ndarray, floor: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-model-out online LiRA: every defined (model, sample) pair's log likelihood ratio."""
    scores, labels = [], []
    k = phi.shape[0]
    for m in range(k):
        rest = [j for j in range(k) if j != m]
        for i in range(phi.shape[1]):
            a = np.array([phi[j, i] for j in rest if members[j, i]])
            b = np.array([phi[j, i] for j in rest if not members[j, i]])
            if len(a) and len(b):
                (mi, si), (mo, so) = gaussian(a, floor), gaussian(b, floor)
                scores.append(stats.norm.logpdf(phi[m, i], mi, si) - stats.norm.logpdf(phi[m, i], mo, so))
                labels.append(members[m, i])
    return np.array(scores), np.array(labels)


def tpr_at_fpr_by_hand(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The largest TPR over thresholds whose FPR is at most target (no interpolation)."""
    best = 0.0
    for t in np.unique(scores):
        if (scores[~labels] >= t).mean() <= target:
            best = max(best, float((scores[labels] >= t).mean()))
    return best


# --- detection: AUROC, AUPRC, precision at k ------------------------------------------------
POS = np.array([1, 0, 1, 0, 0, 1, 0], dtype=bool)
TIED = np.array([3, 3, 2, 2, 2, 1, 0], dtype=np.float64)


def test_detection_with_ties_matches_pairs_sklearn_and_every_tie_break() -> None:
    got = detection_metrics(POS, TIED)
    assert got["auroc"] == pytest.approx(auroc_pairs(POS, TIED), abs=1e-15) == pytest.approx(6.5 / 12)
    assert got["auprc"] == pytest.approx(average_precision_score(POS, TIED), abs=1e-15)
    assert got["precision_at_k"] == pytest.approx(expected_precision_at_k(POS, TIED, 3), abs=1e-15)
    assert got["precision_at_k"] == pytest.approx(4 / 9)


def test_a_reversed_proxy_is_not_flipped_and_a_constant_one_is_chance() -> None:
    """Higher = more suspicious (methods.md): a proxy scored the other way is not rescued."""
    assert detection_metrics(POS, -TIED)["auroc"] == pytest.approx(1 - 6.5 / 12)
    flat = detection_metrics(POS, np.ones(7))
    assert flat["auroc"] == 0.5 and flat["auprc"] == pytest.approx(3 / 7)
    assert flat["precision_at_k"] == pytest.approx(3 / 7)


def test_nan_scores_rank_below_every_score() -> None:
    s = np.array([np.nan, 1, 2, 3, 4, 5, 6])
    assert detection_metrics(POS, s)["auroc"] == pytest.approx(auroc_pairs(POS, s))


def test_weighted_detection_is_the_statistic_of_the_resampled_multiset() -> None:
    counts = np.array([2, 0, 1, 2, 1, 0, 1])
    rep = np.repeat(np.arange(7), counts)
    got = weighted_detection(POS, TIED, counts[None, :].astype(float), integral=True)
    assert got["auroc"][0] == pytest.approx(auroc_pairs(POS[rep], TIED[rep]))
    assert got["auprc"][0] == pytest.approx(average_precision_score(POS[rep], TIED[rep]))
    assert got["precision_at_k"][0] == pytest.approx(
        expected_precision_at_k(POS[rep], TIED[rep], int(POS[rep].sum())))


def test_fractionally_weighted_auroc_and_auprc_are_sklearns_with_sample_weight() -> None:
    """The privacy flags enter as fractional weights: scikit-learn's weighted statistics agree."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(3, 40))
        pos, s = rng.random(n) < 0.4, np.round(rng.random(n), 1)
        w = rng.random(n) * (rng.random(n) < 0.8)
        if w[pos].sum() == 0 or w[~pos].sum() == 0:
            continue
        got = weighted_detection(pos, s, w[None, :])
        assert got["auroc"][0] == pytest.approx(roc_auc_score(pos, s, sample_weight=w), abs=1e-12)
        assert got["auprc"][0] == pytest.approx(average_precision_score(pos, s, sample_weight=w), abs=1e-12)
        checked += 1
    assert checked > 100


# --- memorization similarity ------------------------------------------------------------------
def test_cosine_pearson_spearman_with_ties_match_numpy_and_scipy() -> None:
    x = np.array([1, 2, 2, 3, 5, 5, 5, 8.0])
    y = np.array([0.1, 0.4, 0.3, 0.3, 0.9, 0.2, 0.7, 0.8])
    got = similarity_metrics(x, y)
    assert got["cosine"] == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_top_k_without_a_boundary_tie_is_the_metrics_of_the_k_highest_references() -> None:
    rng = np.random.default_rng(3)
    ref, proxy = rng.random(60), rng.random(60)
    top = np.argsort(-ref)[:6]  # default k = 10 % of N
    got = similarity_metrics(proxy, ref)
    assert got["pearson_topk"] == pytest.approx(stats.pearsonr(proxy[top], ref[top]).statistic, abs=1e-12)
    assert got["spearman_topk"] == pytest.approx(stats.spearmanr(proxy[top], ref[top]).statistic, abs=1e-12)


def test_top_k_with_a_boundary_tie_is_the_mean_over_random_tie_breaks() -> None:
    """Reference: 3 samples above, 4 tied for the last 2 places of k = 5 (N = 50): the exact mean
    over the 6 equally likely choices, against the harness's seeded Monte Carlo mean."""
    rng = np.random.default_rng(5)
    ref = np.r_[[0.9, 0.8, 0.7], [0.5] * 4, rng.random(43) * 0.4]
    proxy = rng.random(50)
    exact = np.mean([stats.pearsonr(proxy[[0, 1, 2, *c]], ref[[0, 1, 2, *c]]).statistic
                     for c in itertools.combinations(range(3, 7), 2)])
    assert similarity_metrics(proxy, ref, top_k=5)["pearson_topk"] == pytest.approx(exact, abs=0.02)


# --- stability reference -----------------------------------------------------------------------
def test_stability_is_in_minus_out_and_nan_without_both_groups() -> None:
    correct = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 1]], dtype=float)
    members = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]], dtype=bool)
    with pytest.warns(RuntimeWarning, match="1 of 4"):
        ref = stability_memorization(correct, members)
    mine = stability_by_hand(correct, members)
    np.testing.assert_array_equal(np.isnan(ref.scores), np.isnan(mine))
    np.testing.assert_allclose(ref.scores[:3], mine[:3], atol=1e-15)
    assert np.isnan(ref.scores[3])  # sample 3: every model trained on it
    se0 = math.sqrt(0 / 2 + np.var([0, 1], ddof=1) / 2)  # sample 0: in-values 1, 1; out-values 0, 1
    assert ref.stderr[0] == pytest.approx(se0)


# --- privacy: vulnerability, LiRA, flags ------------------------------------------------------
def _toy_phi() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    members = rng.random((6, 12)) < 0.6
    members[:, 0] = True  # never held out: no v, no LiRA pair
    phi = rng.normal(size=(6, 12)) + 1.5 * members * rng.random(12)
    return phi, members


def test_vulnerability_and_leave_one_model_out_lira_match_their_definitions() -> None:
    phi, members = _toy_phi()
    v = gaussian_auroc(fit_gaussians(phi, members, 0.1))
    np.testing.assert_allclose(v, vulnerability_by_hand(phi, members), atol=1e-12, equal_nan=True)
    assert np.isnan(v[0])
    scores = lira_scores(phi, members, 0.1)
    mine, labels = lira_by_hand(phi, members)
    got = scores[np.isfinite(scores)]
    assert len(got) == len(mine)
    np.testing.assert_allclose(np.sort(got), np.sort(mine), atol=1e-10)
    attack = attack_metrics(scores, members)
    assert attack.auroc == pytest.approx(roc_auc_score(labels, mine), abs=1e-12)
    for target in (0.001, 0.01):
        assert attack.tpr_at[target] == pytest.approx(tpr_at_fpr_by_hand(mine, labels, target))


def test_privacy_flag_auroc_is_its_expectation_over_boundary_tie_breaks() -> None:
    v = np.array([0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.55, 0.45])
    s = np.array([5, 1, 3, 2, 0, 1, 2, 0, 1, 4, 3, 2.0])
    aucs = []
    for pick in itertools.combinations([1, 2, 3], 2):  # top 25 % = 3 places: 0.9 and two of the 0.8s
        flag = np.zeros(12, dtype=bool)
        flag[[0, *pick]] = True
        aucs.append(roc_auc_score(flag, s))
    got = proxy_metrics(v, s, np.ones((1, 12)), 0.25)
    assert got["auroc"][0] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert got["spearman"][0] == pytest.approx(stats.spearmanr(s, v).statistic, abs=1e-12)


# --- corruption --------------------------------------------------------------------------------
def test_symmetric_noise_flips_round_p_n_labels_each_to_another_class() -> None:
    y = np.arange(1000) % 10
    noisy, mask = symmetric_noise(y, 10, 0.05, seed=4)
    assert mask.sum() == 50 and np.array_equal(mask, noisy != y)
    _, many = symmetric_noise(np.zeros(20000, dtype=int), 4, 0.5, seed=1)
    drawn = symmetric_noise(np.zeros(20000, dtype=int), 4, 0.5, seed=1)[0][many]
    assert set(np.unique(drawn)) == {1, 2, 3}  # uniform over the *other* classes
    assert stats.chisquare(np.bincount(drawn)[1:]).pvalue > 1e-4


def test_duplicates_copy_b_into_a_with_a_label_other_than_bs() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 3)), np.arange(40) % 5
    new_x, new_y, positives = inject_duplicates(x, y, 5, pairs=6, seed=2)
    assert positives.sum() == 12
    changed = np.flatnonzero((new_x != x).any(axis=1))
    assert len(changed) == 6  # the a slots
    for a in changed:
        b = int(np.flatnonzero((x == new_x[a]).all(axis=1))[0])
        assert positives[a] and positives[b] and new_y[a] != y[b] and new_y[b] == y[b]


# --- theory and cost ---------------------------------------------------------------------------
def test_skewness_and_sarles_bimodality_coefficient_from_moments() -> None:
    v = np.array([0.1, 0.2, 0.2, 0.3, 1.5, 1.6, 1.7, 3.0, 0.0, 0.4])
    n, d = len(v), v - v.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    g1 = m3 / m2**1.5
    big_g = g1 * math.sqrt(n * (n - 1)) / (n - 2)
    excess = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
    assert skewness(v) == pytest.approx(g1, abs=1e-12)
    assert bimodality_coefficient(v) == pytest.approx(
        (big_g**2 + 1) / (excess + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))), abs=1e-12)


def test_theory_bins_are_numpy_histograms_equal_width_bins() -> None:
    """Bin counts and means over equal-width bins of x, the last bin closed (np.histogram's rule),
    on rounded x values that land on the bin edges."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        x = np.round(rng.random(300) * rng.integers(1, 50), int(rng.integers(0, 3)))
        y = rng.random(300)
        table = binned_relation(x, y, bins=int(rng.integers(1, 25)), keep_empty=True)
        counts, edges = np.histogram(x, bins=len(table))
        idx = np.clip(np.digitize(x, edges) - 1, 0, len(table) - 1)
        means = [y[idx == b].mean() if (idx == b).any() else np.nan for b in range(len(table))]
        np.testing.assert_array_equal(table["count"].to_numpy(), counts)
        np.testing.assert_allclose(table["mean"].to_numpy(), means, equal_nan=True)


class _Manifest:
    def __init__(self, flops: float, seconds: float) -> None:
        self.train_flops, self.train_seconds, self.recorders = flops, seconds, {}


class _Run:
    def __init__(self, flops: float, seconds: float) -> None:
        self.manifest = _Manifest(flops, seconds)


def test_cost_ratios_divide_by_the_plain_base_run() -> None:
    row = cost_row(3.6e9, 7.5, _Run(1e9, 2.5))  # type: ignore[arg-type]
    assert row == {"flops": 3.6e9, "seconds": 7.5, "flops_rel": 3.6, "seconds_rel": 3.0}
    assert math.isnan(cost_row(1.0, 1.0, None)["flops_rel"])


# --- one real tiny run, every number recomputed from the stored arrays ------------------------
N, E, K = 150, 3, 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from harness.api import run_experiment

    store = tmp_path_factory.mktemp("numerics26") / "store"
    result = run_experiment(dataset="digits", subset=N, epochs=E, seeds=[0], proxies="csl,final_loss",
                            tasks=["duplicates", "memorization", "privacy", "theory", "cost"], bootstrap=0,
                            task_args={"memorization": {"k": K}}, store=str(store), out=None,
                            executor="inprocess", progress=False, device="cpu")
    runs = {json.loads((d / "manifest.json").read_text())["label"]: d for d in (store / "runs").iterdir()}
    return result, runs


def _value(result, task: str, proxy: str, metric: str) -> float:
    raw = result.raw
    row = raw[(raw.task == task) & (raw.proxy == proxy) & (raw.metric == metric)]
    assert len(row) == 1, (task, proxy, metric)
    return float(row.value.iloc[0])


def _stability_arrays(runs: dict[str, Path], key: str) -> np.ndarray:
    rows = [np.load(runs[f"digits clean mlp seed{1_000_000 + j} on=random0.7#{j}@0"]
                    / f"eval_pass[epochs=last].{key}.npy")[0] for j in range(K)]
    return np.stack(rows).astype(np.float64)


def _members() -> np.ndarray:
    """Model j trains on the first round(0.7 N) of default_rng([seed, j]).permutation(N)."""
    members = np.zeros((K, N), dtype=bool)
    for j in range(K):
        members[j, np.random.default_rng([0, j]).permutation(N)[: round(0.7 * N)]] = True
    return members


@pytest.mark.slow
def test_real_run_every_reference_privacy_theory_and_cost_number(tiny) -> None:
    result, runs = tiny
    members = _members()
    clean = result.scores["clean_seed0"]
    reference = stability_by_hand(_stability_arrays(runs, "correct"), members)
    stored = result.tables["memorization/reference_seed0.csv"]["reference"].to_numpy()
    np.testing.assert_allclose(stored, reference, atol=1e-15, equal_nan=True)
    known = np.isfinite(reference)
    for proxy in ("csl", "final_loss"):
        s, r = clean[proxy].to_numpy()[known], reference[known]
        assert _value(result, "memorization", proxy, "cosine") == pytest.approx(
            s @ r / np.linalg.norm(s) / np.linalg.norm(r), abs=1e-12)
        assert _value(result, "memorization", proxy, "spearman") == pytest.approx(
            stats.spearmanr(s, r).statistic, abs=1e-12)

    phi = _stability_arrays(runs, "phi")
    v = vulnerability_by_hand(phi, members)
    stored_v = result.tables["privacy/vulnerability_seed0.csv"]["vulnerability"].to_numpy()
    np.testing.assert_allclose(stored_v, v, atol=1e-12, equal_nan=True)
    assert _value(result, "privacy", "reference", "mean_vulnerability") == pytest.approx(np.nanmean(v))
    lira, labels = lira_by_hand(phi, members)
    assert _value(result, "privacy", "reference", "lira_auroc") == pytest.approx(roc_auc_score(labels, lira))
    for target in (0.001, 0.01):
        assert _value(result, "privacy", "reference", f"lira_tpr@{target}fpr") == pytest.approx(
            tpr_at_fpr_by_hand(lira, labels, target))
    vk = v[np.isfinite(v)]
    for proxy in ("csl", "final_loss"):
        s = clean[proxy].to_numpy()[np.isfinite(v)]
        assert _value(result, "privacy", proxy, "spearman") == pytest.approx(stats.spearmanr(s, vk).statistic)
        flag = np.zeros(len(vk), dtype=bool)
        flag[np.argsort(-vk)[: max(1, round(0.1 * len(vk)))]] = True
        assert len(np.unique(vk)) == len(vk)  # no tie at the boundary: the flag is the plain top 10 %
        assert _value(result, "privacy", proxy, "auroc") == pytest.approx(roc_auc_score(flag, s))
        assert _value(result, "privacy", proxy, "auprc") == pytest.approx(average_precision_score(flag, s))

    dup = result.scores["duplicates=1_seed0"]
    assert dup.positive.sum() == 2  # 0.5 % of 150 rounds to 1 pair
    for proxy in ("csl", "final_loss"):
        assert _value(result, "duplicates", proxy, "auroc") == pytest.approx(
            roc_auc_score(dup.positive, dup[proxy]))

    csl = clean["csl"].to_numpy()
    assert _value(result, "theory", "csl vs memorization", "spearman") == pytest.approx(
        stats.spearmanr(csl[known], reference[known]).statistic)
    assert _value(result, "theory", "csl", "skewness") == pytest.approx(stats.skew(csl))

    base = json.loads((runs["digits duplicates=1 mlp seed0"] / "manifest.json").read_text())
    loss = base["recorders"]["train_loss"]["flops"]
    assert _value(result, "cost", "csl", "flops") == pytest.approx(base["train_flops"] + loss)
    assert _value(result, "cost", "csl", "flops_rel") == pytest.approx(1 + loss / base["train_flops"])
    final = base["recorders"]["eval_pass[epochs=last]"]["flops"]
    assert _value(result, "cost", "final_loss", "flops_rel") == pytest.approx(
        (base["train_flops"] + final) / base["train_flops"])
