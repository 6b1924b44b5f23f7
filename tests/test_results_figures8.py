"""The headline tables quoted in README.md and docs/results.md are the committed leaderboards,
cell by cell: a regenerated results folder whose numbers move must move the quoted tables with
it (a stale quoted figure is a silently wrong number). Each cell is rebuilt from the CSV with
the leaderboard's own rounding (3 decimals for a metric and its interval, 2 for a cost ratio,
bold when `tied_with_best`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
GPU = RESULTS / "cifar10-full-gpu"
DIGITS = RESULTS / "digits-default"


def _board(path: Path) -> pd.DataFrame:
    return pd.read_csv(path / "leaderboard.csv")


def _tied(value: object) -> bool:
    """tied_with_best is read as a bool column, or as text beside NaN cost rows."""
    return value is True or str(value) == "True"


def _cell(board: pd.DataFrame, task: str, setting: str, proxy: str, metric: str) -> str:
    """The quoted form of one leaderboard row: mean [ci_low, ci_high], bold when tied."""
    row = board[(board.task == task) & (board.setting == setting) & (board.proxy == proxy)
                & (board.metric == metric)]
    if row.empty:
        return "–"
    assert len(row) == 1, (task, setting, proxy, metric)
    r = row.iloc[0]
    text = f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    return f"**{text}**" if _tied(r["tied_with_best"]) else text


def _ratio(board: pd.DataFrame, task: str, proxy: str, column: str) -> str:
    """A proxy's cost ratio as quoted, from its headline row (every row of a proxy carries it)."""
    rows = board[(board.task == task) & (board.proxy == proxy) & (board.metric == "auroc")]
    return f"{rows[column].iloc[0]:.2f}"


def _table(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the first markdown table whose header starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


GPU_HEADER = "| proxy | mislabeled 10 % AUROC | duplicates (250 pairs) AUROC | FLOPs × | seconds × |"


def _gpu_table_mismatches(text: str) -> list[str]:
    """The proxies whose quoted row differs from results/cifar10-full-gpu (missing and extra
    rows, and a table out of the order of the mislabeled means, count as `<rows>`)."""
    mislabeled, duplicates = _board(GPU / "mislabeled"), _board(GPU / "duplicates")
    rows = _table(text, GPU_HEADER)
    quoted = {row[0]: row[1:] for row in rows}
    proxies = mislabeled[(mislabeled.task == "mislabeled") & (mislabeled.metric == "auroc")]
    order = list(proxies.sort_values("mean", ascending=False, kind="stable").proxy)
    wrong = [] if [row[0] for row in rows] == order else ["<rows>"]
    for proxy, cells in quoted.items():
        expected = [_cell(mislabeled, "mislabeled", "noise=0.1", proxy, "auroc"),
                    _cell(duplicates, "duplicates", "duplicates=250", proxy, "auroc"),
                    _ratio(mislabeled, "mislabeled", proxy, "cost_flops_rel"),
                    _ratio(mislabeled, "mislabeled", proxy, "cost_seconds_rel")]
        if cells != expected:
            wrong.append(proxy)
    return wrong


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "docs" / "results.md"], ids=lambda p: p.name)
def test_the_full_cifar10_gpu_table_is_the_committed_leaderboards(page: Path) -> None:
    """Every proxy of results/cifar10-full-gpu/mislabeled is a row, in the order of its mean, with
    its mislabeled and duplicates AUROC cells and the mislabeled run's cost ratios."""
    assert _gpu_table_mismatches(page.read_text(encoding="utf-8")) == [], page.name


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "docs" / "results.md"], ids=lambda p: p.name)
def test_the_gpu_plain_run_quoted_is_the_cost_denominator(page: Path) -> None:
    """'the plain training run (43.7 s, 6.66 PFLOP)': CSL's absolute cost over its ratio."""
    board = _board(GPU / "mislabeled")
    csl = board[(board.task == "cost") & (board.proxy == "csl")].set_index("metric")["mean"]
    seconds, flops = csl["seconds"] / csl["seconds_rel"], csl["flops"] / csl["flops_rel"]
    text = " ".join(page.read_text(encoding="utf-8").split())
    assert f"plain training run ({seconds:.1f} s, {flops / 1e15:.2f} PFLOP)" in text


DIGITS_HEADER = "| proxy | mislabeled 10 % AUROC | duplicates AUROC | Pearson with stability memorization |"


def test_the_digits_default_table_is_the_committed_leaderboard() -> None:
    """docs/results.md's digits table: AUROC at 10 % noise, duplicates AUROC, Pearson with the
    stability reference and the cost ratios, for every proxy column of results/digits-default."""
    board = _board(DIGITS)
    settings = board[board.task == "duplicates"].setting.unique()
    assert len(settings) == 1
    rows = _table((ROOT / "docs" / "results.md").read_text(encoding="utf-8"), DIGITS_HEADER)
    quoted = {row[0]: row[1:] for row in rows}
    assert set(quoted) == set(board[board.task == "mislabeled"].proxy)
    for proxy, cells in quoted.items():
        expected = [_cell(board, "mislabeled", "noise=0.1", proxy, "auroc"),
                    _cell(board, "duplicates", settings[0], proxy, "auroc"),
                    _cell(board, "memorization", "clean", proxy, "pearson"),
                    _ratio(board, "mislabeled", proxy, "cost_flops_rel"),
                    _ratio(board, "mislabeled", proxy, "cost_seconds_rel")]
        assert cells == expected, proxy


SUBSET_HEADER = "| proxy | csl | csl_eval |"


def test_the_cifar10_subset_cpu_table_is_the_committed_leaderboard() -> None:
    """docs/results.md's CIFAR-10 subset table (proxies as columns): the AUROC row and the seconds
    row of results/cifar10-subset-cpu, for every proxy it ran."""
    board = _board(RESULTS / "cifar10-subset-cpu")
    lines = (ROOT / "docs" / "results.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(SUBSET_HEADER))
    proxies = [cell.strip() for cell in lines[start].strip("|").split("|")][1:]
    rows = {row[0]: row[1:] for row in _table("\n".join(lines[start:]), SUBSET_HEADER)}
    assert set(proxies) == set(board[board.task == "mislabeled"].proxy)
    assert rows["AUROC"] == [_cell(board, "mislabeled", "noise=0.1", p, "auroc") for p in proxies]
    assert rows["seconds ×"] == [_ratio(board, "mislabeled", p, "cost_seconds_rel") for p in proxies]


def test_a_stale_quoted_cell_is_caught() -> None:
    """The check itself: the README with CSL's mislabeled mean one unit of its last digit off
    (as after a regeneration that moved it) fails on CSL alone."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    cell = {row[0]: row[1] for row in _table(text, GPU_HEADER)}["csl"]
    mean = re.search(r"\d\.\d{3}", cell).group(0)
    moved = f"{float(mean) + (0.001 if mean < '0.999' else -0.001):.3f}"
    stale = text.replace(f"| csl | {cell} |", f"| csl | {cell.replace(mean, moved, 1)} |", 1)
    assert stale != text
    assert _gpu_table_mismatches(stale) == ["csl"]
