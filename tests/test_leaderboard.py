"""Leaderboard: per-seed rows aggregated by hand, cost columns, markdown, and the CSV's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.leaderboard import aggregate, markdown

COLUMNS = ["task", "dataset", "model", "setting", "proxy", "metric", "mean", "std", "n_seeds", "cost_flops",
           "cost_seconds", "cost_flops_rel", "cost_seconds_rel"]


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
    assert "### mislabeled: auroc (mean ± std over 3 seed(s))" in md
    assert "### cost: seconds_rel (mean ± std over 2 seed(s))" in md
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
                 "--out", str(out), "--store", str(tmp_path / "store")])
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
    assert "mean ± std" in (out / "leaderboard.md").read_text()
