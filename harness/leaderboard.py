"""Per-seed rows -> leaderboard: mean, std and seed count per (task, setting, proxy, metric), a
95 % bootstrap confidence interval and a paired comparison with the best proxy of the same task,
setting and metric (harness.bootstrap documents the method), each proxy's measured cost
alongside, and a markdown view of the headline metrics.

A row may carry ``boot``: the metric on the setting's B bootstrap resamples (the same resamples
for every proxy of one task, setting and seed). Metrics without replicates (reference rows,
cost, theory statistics) get NaN in the CI and comparison columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from harness.bootstrap import combine_seeds, compare_differences, generator, paired_differences, percentile_interval

KEYS = ["task", "dataset", "model", "setting", "proxy", "metric"]
STATS = ["mean", "std", "n_seeds", "ci_low", "ci_high", "p_vs_best", "tied_with_best"]
COST_COLUMNS = ["cost_flops", "cost_seconds", "cost_flops_rel", "cost_seconds_rel"]
COLUMNS = [*KEYS, *STATS, *COST_COLUMNS]
#: Metrics where lower is better (the cost task's); everything else compares higher-is-better.
LOWER_IS_BETTER = {"flops", "seconds", "flops_rel", "seconds_rel"}


def higher_is_better(task: str, metric: str) -> bool:
    return task != "cost" and metric not in LOWER_IS_BETTER


def _intervals(group: pd.DataFrame, task: str, setting: str, metric: str) -> pd.DataFrame:
    """CI and comparison columns for one (task, dataset, model, setting, metric): the proxies'
    per-seed replicates stacked (P, S, B), seeds resampled with one draw for all proxies. A seed
    whose value is undefined (NaN: not in the mean nor in n_seeds) adds no replicates either: a
    top-k Pearson whose tied maxima fill the top k is NaN, yet resamples that missed some of them
    are defined, and their other statistic made a [-1, 1] "interval" around a NaN mean."""
    rows = group[group["boot"].map(lambda b: isinstance(b, np.ndarray) and b.size > 0)]
    if rows.empty:
        return pd.DataFrame(columns=["proxy", "ci_low", "ci_high", "p_vs_best", "tied_with_best"])
    proxies = list(dict.fromkeys(rows["proxy"]))
    seeds = sorted(set(rows["seed"]))
    b = max(len(x) for x in rows["boot"])
    values = np.full((len(proxies), len(seeds), b), np.nan)
    for proxy, seed, value, boot in zip(rows["proxy"], rows["seed"], rows["value"], rows["boot"], strict=True):
        if np.isfinite(value):
            values[proxies.index(proxy), seeds.index(seed), : len(boot)] = boot
    key = ("seeds", task, setting, metric, *seeds)
    reps = combine_seeds(values, generator(*key))
    low, high = percentile_interval(reps)
    means = rows.groupby("proxy", sort=False)["value"].mean().reindex(proxies).to_numpy()
    higher = higher_is_better(task, metric)
    finite = np.isfinite(means)
    p_vs_best = np.full(len(proxies), np.nan)
    tied = np.zeros(len(proxies), dtype=bool)
    if finite.any():
        best = int(np.nanargmax(means) if higher else np.nanargmin(means))
        # the same seed draw as reps, differences taken within each seed: a proxy missing a seed is
        # compared with the best on the seeds they share, never on a different set of seeds
        p_vs_best, tied = compare_differences(paired_differences(values, best, generator(*key)), higher)
    # no paired replicate (a NaN mean, no seed shared with the best, a best without replicates): no
    # comparison was made, so <NA> -- False read "worse than the best" beside a blank p_vs_best
    compared = np.isfinite(p_vs_best)
    tied_col = pd.array([bool(t) if c else pd.NA for t, c in zip(tied, compared, strict=True)], dtype="boolean")
    return pd.DataFrame({"proxy": proxies, "ci_low": low, "ci_high": high, "p_vs_best": p_vs_best,
                         "tied_with_best": tied_col})


def aggregate(raw: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard (columns COLUMNS); `raw` holds one row per seed, with an optional
    ``boot`` column of bootstrap replicates. Its B is kept in ``board.attrs["bootstrap"]``."""
    if raw.empty:
        return pd.DataFrame(columns=COLUMNS)
    board = (
        raw.groupby(KEYS, sort=False)["value"]
        .agg(mean="mean", std="std", n_seeds="count")
        .reset_index()
    )
    ci = []
    n_boot = 0
    if "boot" in raw.columns:
        for (task, dataset, model, setting, metric), group in raw.groupby(
            ["task", "dataset", "model", "setting", "metric"], sort=False
        ):
            frame = _intervals(group, task, setting, metric)
            ci.append(frame.assign(task=task, dataset=dataset, model=model, setting=setting, metric=metric))
        n_boot = max((len(b) for b in raw["boot"] if isinstance(b, np.ndarray)), default=0)
    ci_frame = pd.concat(ci, ignore_index=True) if ci else pd.DataFrame(columns=[*KEYS, *STATS[3:]])
    board = board.merge(ci_frame[[*KEYS, *STATS[3:]]], on=KEYS, how="left")
    board["tied_with_best"] = board["tied_with_best"].astype("boolean")
    for col in STATS[3:6]:
        board[col] = board[col].astype(float)
    cost = raw[raw.task == "cost"].groupby(["proxy", "metric"])["value"].mean().unstack()
    scored = board["task"] != "theory"  # theory rows name quantities (a histogram of learning_time), not proxies
    for col in COST_COLUMNS:
        metric = col.removeprefix("cost_")
        mapping = cost[metric] if metric in getattr(cost, "columns", []) else pd.Series(dtype=float)
        board[col] = board["proxy"].map(mapping).where(scored)
    board = board[COLUMNS]
    board.attrs["bootstrap"] = n_boot
    return board


def _over_seeds(n_seeds: pd.Series) -> str:
    """The seeds a table's values are over, counting only cells some seed gave a value (a seed whose
    value is NaN is not counted): a proxy NaN on every seed made the header read "over 0-1 seed(s)"."""
    counted = n_seeds[n_seeds > 0]
    if counted.empty:
        return "over no seed: no seed gave a value"
    low, high = int(counted.min()), int(counted.max())
    over = f"over {high if low == high else f'{low}-{high}'} seed(s)"
    return over + ("; no value: no seed gave one" if len(counted) < len(n_seeds) else "")


def _cell(r: pd.Series) -> str:
    """`mean [ci_low, ci_high]` when there is an interval, else `mean ± std`; ties with the best
    (and the best itself) in bold; `no value` where no seed gave one (not `nan`)."""
    if r["n_seeds"] == 0:
        return "no value"
    if pd.notna(r["ci_low"]):
        text = f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    else:
        text = f"{r['mean']:.3f}" + ("" if pd.isna(r["std"]) else f" ± {r['std']:.3f}")
    tied = r["tied_with_best"]
    return f"**{text}**" if pd.notna(tied) and bool(tied) else text


def headline_metrics(tasks: Iterable[str]) -> dict[str, str]:
    """Each named task's headline metric (`Task.headline`), in the order given: a registered task
    without one (theory) and a name no task registers are left out."""
    from harness.tasks import base

    registered = base.TASKS
    return {t: m for t in dict.fromkeys(tasks) if t in registered and (m := registered[t].headline) is not None}


def markdown(board: pd.DataFrame, bootstrap: int | None = None, headlines: Mapping[str, str] | None = None) -> str:
    """One table per task, in the board's order: proxies as rows, settings as columns, the
    headline metric as mean [95 % CI] (bold: statistically tied with the best of its column), or
    mean ± std where there is no interval (cost, B = 0). `headlines` (task -> metric) defaults to
    the tasks' own (`Task.headline`), a plugin's included; `bootstrap` (B) to what aggregate recorded."""
    b = board.attrs.get("bootstrap", 0) if bootstrap is None else bootstrap
    parts = []
    for task, metric in (headline_metrics(board["task"]) if headlines is None else headlines).items():
        sub = board[(board.task == task) & (board.metric == metric)]
        if sub.empty:
            continue
        table = sub.assign(cell=sub.apply(_cell, axis=1)).pivot(index="proxy", columns="setting", values="cell")
        higher = higher_is_better(task, metric)
        order = sub.groupby("proxy")["mean"].mean().sort_values(ascending=not higher).index
        table = table.loc[order]
        over = _over_seeds(sub["n_seeds"])
        body = table.fillna("").to_markdown(disable_numparse=True)
        if sub["ci_low"].notna().any():
            how = (f"mean [95% CI] {over}, bootstrap B = {b} resamples of samples and seeds; "
                   "**bold**: tied with the best (paired 95% interval of the difference contains 0 or lies above it)")
        else:
            how = f"mean ± std {over}"
        parts.append(f"### {task}: {metric} ({how})\n\n{body}\n")
    return "\n".join(parts)
