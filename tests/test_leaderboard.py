"""Leaderboard: per-seed rows aggregated by hand, bootstrap CIs and ties with the best, cost
columns, markdown, and the CSV's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.bootstrap import combine_seeds, generator
from harness.cli import main
from harness.leaderboard import aggregate, markdown

COLUMNS = ["task", "dataset", "model", "setting", "proxy", "metric", "mean", "std", "n_seeds", "ci_low", "ci_high",
           "p_vs_best", "tied_with_best", "cost_flops", "cost_seconds", "cost_flops_rel", "cost_seconds_rel"]


def _raw() -> pd.DataFrame:
    rows = []

    def add(task, setting, proxy, metric, values):
        for seed, v in enumerate(values):
            rows.append({"task": task, "dataset": "digits", "model": "mlp", "setting": setting, "seed": seed,
                         "proxy": proxy, "metric": metric, "value": v})

    add("mislabeled", "noise=0.1", "csl", "auroc", [0.9, 0.8, 0.7])
    add("mislabeled", "noise=0.1", "aum", "auroc", [0.6, 0.6, 0.6])
    add("mislabeled", "noise=0.05", "csl", "auroc", [0.95])
    add("mislabeled", "noise=0.1", "csl", "auprc", [0.5, 0.7, np.nan])
    add("cost", "noise=0.1", "csl", "flops", [100.0, 300.0])
    add("cost", "noise=0.1", "csl", "seconds", [2.0, 4.0])
    add("cost", "noise=0.1", "csl", "flops_rel", [1.0, 1.0])
    add("cost", "noise=0.1", "csl", "seconds_rel", [1.0, 1.5])
    add("cost", "noise=0.1", "aum", "seconds_rel", [1.25])
    return pd.DataFrame(rows, columns=["task", "dataset", "model", "setting", "proxy", "metric", "seed", "value"])


def _row(board: pd.DataFrame, **where) -> pd.Series:
    mask = np.ones(len(board), dtype=bool)
    for k, v in where.items():
        mask &= board[k].to_numpy() == v
    assert mask.sum() == 1, where
    return board[mask].iloc[0]


def test_aggregate_mean_std_seeds_by_hand() -> None:
    board = aggregate(_raw())
    assert list(board.columns) == COLUMNS
    r = _row(board, task="mislabeled", setting="noise=0.1", proxy="csl", metric="auroc")
    assert r["mean"] == pytest.approx(0.8)
    assert r["std"] == pytest.approx(0.1)  # sample std (ddof=1) of 0.9, 0.8, 0.7
    assert r["n_seeds"] == 3
    r = _row(board, task="mislabeled", setting="noise=0.1", proxy="aum", metric="auroc")
    assert (r["mean"], r["std"], r["n_seeds"]) == (pytest.approx(0.6), pytest.approx(0.0), 3)
    r = _row(board, task="mislabeled", setting="noise=0.05", proxy="csl", metric="auroc")
    assert r["mean"] == pytest.approx(0.95) and np.isnan(r["std"]) and r["n_seeds"] == 1
    r = _row(board, task="mislabeled", setting="noise=0.1", proxy="csl", metric="auprc")
    assert r["mean"] == pytest.approx(0.6) and r["n_seeds"] == 2  # a NaN seed is not counted
    assert len(board) == 9
    # no bootstrap replicates: no intervals, no comparison
    assert board[["ci_low", "ci_high", "p_vs_best"]].isna().all().all() and board["tied_with_best"].isna().all()


def _boot_raw(boots: dict[str, list[np.ndarray]], metric: str = "auroc", task: str = "mislabeled") -> pd.DataFrame:
    rows = []
    for proxy, per_seed in boots.items():
        for seed, boot in enumerate(per_seed):
            rows.append({"task": task, "dataset": "digits", "model": "mlp", "setting": "noise=0.1", "seed": seed,
                         "proxy": proxy, "metric": metric, "value": float(np.mean(boot)), "boot": np.asarray(boot)})
    rows.append({"task": "memorization", "dataset": "digits", "model": "mlp", "setting": "clean", "seed": 0,
                 "proxy": "reference", "metric": "reference_mean_stderr", "value": 0.1, "boot": None})
    return pd.DataFrame(rows)


def test_one_seed_ci_is_the_percentile_interval_of_the_replicates() -> None:
    boot = np.arange(1000) / 1000  # 0.000 .. 0.999
    r = _row(aggregate(_boot_raw({"csl": [boot]})), proxy="csl")
    assert r["ci_low"] == pytest.approx(np.percentile(boot, 2.5))
    assert r["ci_high"] == pytest.approx(np.percentile(boot, 97.5))
    assert r["p_vs_best"] == 1.0 and bool(r["tied_with_best"])  # the best is tied with itself
    ref = _row(aggregate(_boot_raw({"csl": [boot]})), proxy="reference")
    assert np.isnan(ref["ci_low"]) and np.isnan(ref["p_vs_best"]) and pd.isna(ref["tied_with_best"])


def test_seeds_resampled_with_one_draw_shared_by_every_proxy() -> None:
    rng = np.random.default_rng(0)
    a = [0.9 + 0.01 * rng.standard_normal(200) for _ in range(3)]
    b = [x - 0.005 + 0.002 * rng.standard_normal(200) for x in a]  # paired: b tracks a closely
    board = aggregate(_boot_raw({"a": a, "b": b}))
    values = np.stack([np.stack(a), np.stack(b)])  # (P, S, B)
    reps = combine_seeds(values, generator("seeds", "mislabeled", "noise=0.1", "auroc", 0, 1, 2))
    # the same draw by hand: replicate j averages the seeds drawn for it, and the k-th copy of a
    # seed drawn more than once reads that seed's replicate (j + k) mod B
    draw = generator("seeds", "mislabeled", "noise=0.1", "auroc", 0, 1, 2).integers(0, 3, size=(200, 3))
    cols = [[(j + list(row[:i]).count(s)) % 200 for i, s in enumerate(row)] for j, row in enumerate(draw)]
    np.testing.assert_allclose(reps[0], [values[0, draw[j], cols[j]].mean() for j in range(200)])
    ra, rb = _row(board, proxy="a"), _row(board, proxy="b")
    assert ra["ci_low"] == pytest.approx(np.percentile(reps[0], 2.5))
    assert rb["ci_high"] == pytest.approx(np.percentile(reps[1], 97.5))
    diff = reps[1] - reps[0]
    assert rb["p_vs_best"] == pytest.approx(np.mean(diff >= 0))
    assert bool(rb["tied_with_best"]) == (np.percentile(diff, 2.5) <= 0 <= np.percentile(diff, 97.5))
    # the intervals overlap a lot, but the paired difference is always negative: not tied
    assert rb["ci_high"] > ra["ci_low"] and rb["p_vs_best"] == 0.0 and not bool(rb["tied_with_best"])


def test_ties_with_the_best_and_bold_in_markdown() -> None:
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((3, 500))
    boots = {"best": [0.90 + 0.02 * noise[s] for s in range(3)],
             "close": [0.899 + 0.02 * noise[s] + 0.01 * rng.standard_normal(500) for s in range(3)],
             "bad": [0.60 + 0.02 * noise[s] for s in range(3)]}
    board = aggregate(_boot_raw(boots))
    assert bool(_row(board, proxy="close")["tied_with_best"]) and not bool(_row(board, proxy="bad")["tied_with_best"])
    assert 0.2 < _row(board, proxy="close")["p_vs_best"] < 0.8 and _row(board, proxy="bad")["p_vs_best"] == 0.0
    md = markdown(board)
    assert "B = 500" in md and "over 3 seed(s)" in md
    best = _row(board, proxy="best")
    assert f"| **{best['mean']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}]** |" in md
    assert next(line for line in md.splitlines() if line.startswith("| bad")).count("**") == 0


def test_lower_is_better_for_cost_like_metrics() -> None:
    boots = {"cheap": [np.full(100, 1.0)], "dear": [np.full(100, 3.0)]}
    board = aggregate(_boot_raw(boots, metric="seconds_rel", task="cost"))
    assert bool(_row(board, proxy="cheap")["tied_with_best"]) and _row(board, proxy="dear")["p_vs_best"] == 0.0


def test_cost_columns_attach_to_every_row_of_a_proxy() -> None:
    board = aggregate(_raw())
    for _, r in board[board.proxy == "csl"].iterrows():
        assert r["cost_flops"] == pytest.approx(200.0)
        assert r["cost_seconds"] == pytest.approx(3.0)
        assert r["cost_flops_rel"] == pytest.approx(1.0)
        assert r["cost_seconds_rel"] == pytest.approx(1.25)
    for _, r in board[board.proxy == "aum"].iterrows():
        assert r["cost_seconds_rel"] == pytest.approx(1.25)
        assert np.isnan(r["cost_flops"]) and np.isnan(r["cost_seconds"]) and np.isnan(r["cost_flops_rel"])


def test_aggregate_without_cost_rows_or_any_rows() -> None:
    raw = _raw()
    board = aggregate(raw[raw.task != "cost"])
    assert list(board.columns) == COLUMNS
    assert board[["cost_flops", "cost_seconds", "cost_flops_rel", "cost_seconds_rel"]].isna().all().all()
    empty = aggregate(raw.iloc[0:0])
    assert list(empty.columns) == COLUMNS and empty.empty


def test_markdown_shows_mean_plus_minus_std() -> None:
    md = markdown(aggregate(_raw()))
    # some cells have fewer seeds than others: the heading gives the range, not the largest count
    assert "### mislabeled: auroc (mean ± std over 1-3 seed(s))" in md
    assert "### cost: seconds_rel (mean ± std over 1-2 seed(s))" in md
    assert "auprc" not in md  # headline metrics only
    mislabeled, cost = md.split("### cost")
    header = next(line for line in mislabeled.splitlines() if line.startswith("| proxy"))
    assert "noise=0.05" in header and "noise=0.1" in header
    csl = next(line for line in mislabeled.splitlines() if line.startswith("| csl"))
    aum = next(line for line in mislabeled.splitlines() if line.startswith("| aum"))
    assert "0.800 ± 0.100" in csl and "0.600 ± 0.000" in aum
    assert mislabeled.index("| csl") < mislabeled.index("| aum")  # best mean AUROC first
    assert "1.250 ± 0.354" in cost and cost.index("| aum") < cost.index("| csl")  # cheapest first


def test_markdown_single_seed_cells_keep_three_decimals() -> None:
    md = markdown(aggregate(_raw()))
    csl = next(line for line in md.splitlines() if line.startswith("| csl"))
    assert "0.950" in csl


def test_leaderboard_csv_columns_from_a_real_run(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", "--proxies", "csl,final_loss", "--tasks", "mislabeled,cost", "--seeds", "2",
                 "--noise-rates", "0.1", "--epochs", "2", "--device", "cpu", "--no-progress",
                 "--out", str(out), "--store", str(tmp_path / "store"), "--executor", "inprocess"])
    assert code == 0, capsys.readouterr().err
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.columns) == COLUMNS
    raw = pd.read_csv(out / "raw.csv")
    assert list(raw.columns) == ["task", "dataset", "model", "setting", "proxy", "metric", "seed", "value"]
    auroc = _row(board, task="mislabeled", proxy="csl", metric="auroc")
    seeds = raw[(raw.task == "mislabeled") & (raw.proxy == "csl") & (raw.metric == "auroc")]["value"]
    assert auroc["n_seeds"] == 2 == len(seeds)
    assert auroc["mean"] == pytest.approx(seeds.mean()) and auroc["std"] == pytest.approx(seeds.std())
    assert board["cost_seconds_rel"].notna().all() and board["cost_flops"].gt(0).all()
    # csl's recorder costs no FLOPs (a scatter), so its FLOP ratio is exactly 1; final_loss adds an eval pass
    assert _row(board, task="mislabeled", proxy="csl", metric="auroc")["cost_flops_rel"] == pytest.approx(1.0)
    assert _row(board, task="mislabeled", proxy="final_loss", metric="auroc")["cost_flops_rel"] > 1.0
    # every detection metric carries a 95% interval around its mean; cost has none
    detection = board[board.task == "mislabeled"]
    assert detection[["ci_low", "ci_high"]].notna().all().all()
    width = detection.ci_high - detection.ci_low
    assert (width > 0).all() and (width < 0.5).all()
    assert board[board.task == "cost"][["ci_low", "ci_high"]].isna().all().all()
    md = (out / "leaderboard.md").read_text()
    assert "mean [95% CI] over 2 seed(s)" in md and "mean ± std" in md


def test_theory_rows_carry_no_proxy_cost() -> None:
    """A theory row's proxy column names a quantity (a histogram of learning_time), not the proxy
    of that name: the cost columns stay empty there."""
    rows = [{"task": "cost", "dataset": "d", "model": "m", "setting": "s", "proxy": "learning_time",
             "metric": "flops_rel", "seed": 0, "value": 1.7},
            {"task": "theory", "dataset": "d", "model": "m", "setting": "s", "proxy": "learning_time",
             "metric": "skewness", "seed": 0, "value": 0.3},
            {"task": "mislabeled", "dataset": "d", "model": "m", "setting": "s", "proxy": "learning_time",
             "metric": "auroc", "seed": 0, "value": 0.7}]
    board = aggregate(pd.DataFrame(rows)).set_index("task")
    assert board.loc["mislabeled", "cost_flops_rel"] == 1.7 and np.isnan(board.loc["theory", "cost_flops_rel"])
