"""Per-seed rows -> leaderboard: mean, std and seed count per (task, setting, proxy, metric),
with each proxy's measured cost alongside, plus a markdown view of the headline metrics."""

from __future__ import annotations

import pandas as pd

KEYS = ["task", "dataset", "model", "setting", "proxy", "metric"]
COST_COLUMNS = ["cost_flops", "cost_seconds", "cost_flops_rel", "cost_seconds_rel"]
HEADLINE = {"mislabeled": "auroc", "duplicates": "auroc", "cost": "seconds_rel", "memorization": "pearson"}


def aggregate(raw: pd.DataFrame) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame(columns=[*KEYS, "mean", "std", "n_seeds", *COST_COLUMNS])
    board = (
        raw.groupby(KEYS, sort=False)["value"]
        .agg(mean="mean", std="std", n_seeds="count")
        .reset_index()
    )
    cost = raw[raw.task == "cost"].groupby(["proxy", "metric"])["value"].mean().unstack()
    for col in COST_COLUMNS:
        metric = col.removeprefix("cost_")
        mapping = cost[metric] if metric in getattr(cost, "columns", []) else pd.Series(dtype=float)
        board[col] = board["proxy"].map(mapping)
    return board


def markdown(board: pd.DataFrame) -> str:
    """One table per task: proxies as rows, settings as columns, headline metric as mean ± std."""
    parts = []
    for task, metric in HEADLINE.items():
        sub = board[(board.task == task) & (board.metric == metric)]
        if sub.empty:
            continue
        cell = sub.apply(
            lambda r: f"{r['mean']:.3f}" + ("" if pd.isna(r["std"]) else f" ± {r['std']:.3f}"), axis=1
        )
        table = sub.assign(cell=cell).pivot(index="proxy", columns="setting", values="cell")
        order = sub.groupby("proxy")["mean"].mean().sort_values(ascending=task == "cost").index
        table = table.loc[order]
        n = int(sub["n_seeds"].max())
        body = table.fillna("").to_markdown(disable_numparse=True)
        parts.append(f"### {task}: {metric} (mean ± std over {n} seed(s))\n\n{body}\n")
    return "\n".join(parts)
