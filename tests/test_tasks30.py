"""tasks30: leaderboard numbers recomputed independently (sklearn / scipy on the resampled multisets)
and the comparison columns where no comparison can be made."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.bootstrap import Resamples, generator
from harness.leaderboard import aggregate
from harness.metrics import detection_boot, detection_metrics
from harness.similarity import similarity_boot, similarity_table

B = 60


def _row(proxy: str, seed: int, value: float, boot: np.ndarray | None, metric: str = "auroc") -> dict:
    return dict(task="mislabeled", dataset="d", model="m", setting="s", proxy=proxy, metric=metric, seed=seed,
                value=value, boot=boot)


def _board_row(board: pd.DataFrame, proxy: str) -> pd.Series:
    return board[board["proxy"] == proxy].iloc[0]


def test_no_shared_seed_with_the_best_is_no_comparison_not_worse() -> None:
    """A proxy defined only on a seed where the best is not has no paired replicate: its p_vs_best is
    blank, and tied_with_best was False ("worse than the best"), a claim no replicate supports."""
    r = np.random.default_rng(0)
    nan = np.full(B, np.nan)
    rows = [_row("best", 0, 0.9, 0.9 + r.normal(0, 0.01, B)), _row("best", 1, 0.9, 0.9 + r.normal(0, 0.01, B)),
            _row("best", 2, np.nan, nan), _row("other", 0, np.nan, nan), _row("other", 1, np.nan, nan),
            _row("other", 2, 0.5, 0.5 + r.normal(0, 0.01, B))]
    board = aggregate(pd.DataFrame(rows))
    other = _board_row(board, "other")
    assert other["n_seeds"] == 1 and np.isfinite(other["ci_low"]) and np.isnan(other["p_vs_best"])
    assert pd.isna(other["tied_with_best"])
    best = _board_row(board, "best")
    assert best["p_vs_best"] == 1.0 and bool(best["tied_with_best"])


def test_nan_mean_and_best_without_replicates_are_no_comparison() -> None:
    """A proxy with no value on any seed, and every proxy when the best has no finite replicate: <NA>."""
    r = np.random.default_rng(1)
    rows = [_row("a", 0, 0.8, np.full(B, np.nan)), _row("b", 0, 0.7, 0.7 + r.normal(0, 0.01, B)),
            _row("c", 0, np.nan, np.full(B, np.nan))]
    board = aggregate(pd.DataFrame(rows))
    assert board["p_vs_best"].isna().all() and board["tied_with_best"].isna().all()
    assert np.isfinite(_board_row(board, "b")["ci_low"]) and np.isnan(_board_row(board, "a")["ci_low"])


def _ranks_nan_lowest(s: np.ndarray) -> np.ndarray:
    return rankdata(np.where(np.isnan(s), -np.inf, s))


def _precision_at_k(pos: np.ndarray, s: np.ndarray, k: int) -> float:
    """Expected share of positives among the k highest under random tie-breaking, by hand."""
    r = _ranks_nan_lowest(s)
    kth = np.sort(r)[::-1][k - 1]
    above, tied = r > kth, r == kth
    return float((pos[above].sum() + pos[tied].sum() * (k - above.sum()) / tied.sum()) / k)


CASES = {
    "ties": np.array([1, 1, 2, 2, 2, 3, 0, 0, 5, 5.0]),
    "nan": np.array([np.nan, 1, 2, 3, np.nan, 5, 6, 7, 0.5, 2.0]),
    "inf": np.array([np.inf, 1, 2, -np.inf, 4, np.inf, 6, 7, 1e300, -1e300]),
    "constant": np.full(10, 0.25),
}
POSITIVES = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0], dtype=bool)


@pytest.mark.parametrize("case", list(CASES))
def test_detection_point_and_replicates_equal_sklearn(case: str) -> None:
    """Point values, and each bootstrap replicate as sklearn on the resampled multiset (NaN lowest)."""
    s = CASES[case]
    got = detection_metrics(POSITIVES, s)
    r = _ranks_nan_lowest(s)
    assert got["auroc"] == pytest.approx(roc_auc_score(POSITIVES, r), abs=1e-12)
    assert got["auprc"] == pytest.approx(average_precision_score(POSITIVES, r), abs=1e-12)
    assert got["precision_at_k"] == pytest.approx(_precision_at_k(POSITIVES, s, 4), abs=1e-12)
    res = Resamples.draw(len(s), 40, "t30", case)
    boot = detection_boot(POSITIVES, s, res)
    for b in range(res.b):
        idx = np.repeat(np.arange(len(s)), res.counts[b])
        pos = POSITIVES[idx]
        if not pos.any() or pos.all():
            assert all(np.isnan(boot[m][b]) for m in boot)
            continue
        rb = _ranks_nan_lowest(s[idx])
        assert boot["auroc"][b] == pytest.approx(roc_auc_score(pos, rb), abs=1e-12)
        assert boot["auprc"][b] == pytest.approx(average_precision_score(pos, rb), abs=1e-12)
        assert boot["precision_at_k"][b] == pytest.approx(_precision_at_k(pos, s[idx], int(pos.sum())), abs=1e-12)


@pytest.mark.parametrize("positives", [np.zeros(10, bool), np.ones(10, bool)])
def test_detection_without_negatives_or_positives_is_no_value(positives: np.ndarray) -> None:
    assert all(np.isnan(v) for v in detection_metrics(positives, np.arange(10.0)).values())


def _combine(values: np.ndarray, key: tuple) -> np.ndarray:
    """The documented seed stage by loops: replicate b draws S seeds with replacement (one draw per
    replicate from the generator of `key`), the k-th copy of a seed reads its replicate (b + k - 1) mod B,
    and the replicate is the mean of the finite picks."""
    p, s, b = values.shape
    draw = generator(*key).integers(0, s, size=(b, s))
    out = np.full((p, b), np.nan)
    for j in range(b):
        picks = np.array([values[:, seed, (j + list(draw[j][:k]).count(seed)) % b] for k, seed in enumerate(draw[j])]).T
        for i in range(p):
            finite = picks[i][np.isfinite(picks[i])]
            out[i, j] = finite.mean() if len(finite) else np.nan
    return out


def test_leaderboard_of_three_seeds_equals_an_independent_recomputation() -> None:
    """mean, std (ddof 1), n_seeds, the percentile CI, p_vs_best and tied_with_best of detection rows
    from replicates computed here with sklearn on each resampled multiset."""
    rng = np.random.default_rng(7)
    n, seeds, proxies = 80, (0, 1, 2), ("good", "close", "bad")
    rows, reps = [], np.full((3, 3, B), np.nan)
    for j, seed in enumerate(seeds):
        pos = np.zeros(n, bool)
        pos[rng.choice(n, 12, replace=False)] = True
        counts = Resamples.draw(n, B, "mislabeled", "s", seed).counts
        for i, (proxy, shift) in enumerate(zip(proxies, (1.5, 1.3, 0.2), strict=True)):
            s = np.round(rng.normal(size=n) + shift * pos, 1)  # rounded: ties
            for b in range(B):
                idx = np.repeat(np.arange(n), counts[b])
                reps[i, j, b] = roc_auc_score(pos[idx], s[idx]) if pos[idx].any() else np.nan
            boot = detection_boot(pos, s, Resamples.draw(n, B, "mislabeled", "s", seed))["auroc"]
            np.testing.assert_allclose(boot, reps[i, j], atol=1e-12)
            rows.append(_row(proxy, seed, roc_auc_score(pos, s), boot))
    raw = pd.DataFrame(rows)
    board = aggregate(raw)
    comb = _combine(reps, ("seeds", "mislabeled", "s", "auroc", *seeds))
    means = raw.groupby("proxy", sort=False)["value"].mean().to_numpy()
    best = int(np.argmax(means))
    diff = _combine(reps - reps[best], ("seeds", "mislabeled", "s", "auroc", *seeds))
    for i, proxy in enumerate(proxies):
        got = _board_row(board, proxy)
        values = raw[raw.proxy == proxy]["value"].to_numpy()
        assert got["mean"] == pytest.approx(values.mean(), abs=1e-15)
        assert got["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-15) and got["n_seeds"] == 3
        low, high = np.percentile(comb[i], [2.5, 97.5])
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), abs=1e-12)
        assert got["p_vs_best"] == pytest.approx((diff[i] >= 0).mean(), abs=1e-15)
        assert bool(got["tied_with_best"]) == bool(np.percentile(diff[i], 97.5) >= 0)


def test_similarity_point_and_replicates_equal_scipy() -> None:
    """cosine, Pearson, Spearman on the samples with a reference, and each replicate as scipy on the
    resampled multiset (the reference's NaN samples dropped)."""
    rng = np.random.default_rng(3)
    ref = rng.random(50)
    ref[[3, 9, 20]] = np.nan
    s = np.round(ref + rng.normal(0, 0.3, 50), 1)
    s[np.isnan(s)] = 0.4
    keep = np.isfinite(ref)
    point = similarity_table({"p": s}, ref, None)["p"]
    x, y = s[keep], ref[keep]
    assert point["cosine"] == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-12)
    assert point["pearson"] == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    assert point["spearman"] == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
    res = Resamples.draw(50, 30, "memorization", "clean", 0)
    boot = similarity_boot({"p": s}, ref, res, None)["p"]
    for b in range(res.b):
        idx = np.repeat(np.arange(50), res.counts[b])
        idx = idx[np.isfinite(ref[idx])]
        xb, yb = s[idx], ref[idx]
        assert boot["pearson"][b] == pytest.approx(pearsonr(xb, yb)[0], abs=1e-9)
        assert boot["spearman"][b] == pytest.approx(spearmanr(xb, yb)[0], abs=1e-9)
        assert boot["cosine"][b] == pytest.approx(xb @ yb / np.linalg.norm(xb) / np.linalg.norm(yb), abs=1e-9)


def test_mislabeled_ground_truth_is_exactly_the_changed_labels_each_moved_to_another_class() -> None:
    """round(p * N) labels change, each to one of the C - 1 other classes uniformly (methods.md)."""
    from harness.corruption import symmetric_noise

    y = np.arange(1000) % 10
    moved = []
    for seed in range(5):
        noisy, mask = symmetric_noise(y, 10, 0.05, seed)
        assert mask.sum() == round(0.05 * 1000) and np.array_equal(mask, noisy != y)
        moved.append((noisy[mask] - y[mask]) % 10)
    offsets = np.bincount(np.concatenate(moved), minlength=10)
    assert offsets[0] == 0 and offsets[1:].min() >= 10  # 250 moves over 9 offsets: never the same class


def test_duplicates_ground_truth_is_both_members_of_each_pair() -> None:
    """Slot a holds b's image with a label other than b's; positives are exactly the 2P members."""
    from harness.corruption import inject_duplicates

    rng = np.random.default_rng(0)
    x, y = rng.random((50, 3)), np.arange(50) % 5
    new_x, new_y, positives = inject_duplicates(x, y, 5, 4, 1)
    copied = np.flatnonzero((new_x != x).any(axis=1))
    assert len(copied) == 4 and positives.sum() == 8
    for a in copied:
        b = np.flatnonzero((x == new_x[a]).all(axis=1))
        assert len(b) == 1 and positives[a] and positives[b[0]] and new_y[a] != y[b[0]]


def test_privacy_point_metrics_equal_scipy_and_sklearn_on_the_flagged_top_tenth() -> None:
    """Pearson and Spearman against v, AUROC and AUPRC of flagging the round(0.1 n) highest v (no tie)."""
    from harness.tasks.privacy import all_proxy_metrics

    rng = np.random.default_rng(5)
    v = rng.random(200)
    v[:7] = np.nan  # samples with no vulnerability are dropped
    s = np.round(np.nan_to_num(v, nan=0.5) + rng.normal(0, 0.3, 200), 1)
    points, _ = all_proxy_metrics(v, {"p": s}, 0.1, None)
    keep = np.isfinite(v)
    vk, sk = v[keep], s[keep]
    flag = np.zeros(len(vk), bool)
    flag[np.argsort(-vk)[: round(0.1 * len(vk))]] = True
    got = {m: float(x[0]) for m, x in points["p"].items()}
    assert got["pearson"] == pytest.approx(pearsonr(sk, vk)[0], abs=1e-12)
    assert got["spearman"] == pytest.approx(spearmanr(sk, vk)[0], abs=1e-12)
    assert got["auroc"] == pytest.approx(roc_auc_score(flag, sk), abs=1e-12)
    assert got["auprc"] == pytest.approx(average_precision_score(flag, sk), abs=1e-12)
