"""The figures docs/results.md and results/README.md quote in prose from the two digits folders
(`results/digits-default/`, `results/digits-curvature-cost/`) are the committed files', and each
folder's quoted command gives the config its summary.json records. The tables are checked
elsewhere (tests/test_results_figures8.py: the digits table; tests/test_docs_audit9.py: the cost
table's rows but the stability reference's); this file checks the sentences around them, so a
regenerated folder whose numbers move cannot leave a stale figure in the text.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DEFAULT, CURVATURE = RESULTS / "digits-default", RESULTS / "digits-curvature-cost"


def _folded(path: Path) -> str:
    """A page with its line breaks folded, so a sentence matches wherever the page wraps it."""
    return " ".join(path.read_text(encoding="utf-8").split())


def _board(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "leaderboard.csv")


def _summary(folder: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return summary


def _row(board: pd.DataFrame, task: str, setting: str, proxy: str, metric: str) -> pd.Series:
    row = board[(board.task == task) & (board.setting == setting) & (board.proxy == proxy)
                & (board.metric == metric)]
    assert len(row) == 1, (task, setting, proxy, metric)
    return row.iloc[0]


def _mean(board: pd.DataFrame, task: str, setting: str, proxy: str, metric: str) -> float:
    return float(_row(board, task, setting, proxy, metric)["mean"])


def _cost(board: pd.DataFrame, proxy: str, metric: str) -> float:
    """A proxy's cost row (every setting of the cost task carries the same measurement)."""
    rows = board[(board.task == "cost") & (board.proxy == proxy) & (board.metric == metric)]
    return float(rows["mean"].iloc[0])


def _tied(board: pd.DataFrame, task: str, setting: str, metric: str) -> set[str]:
    rows = board[(board.task == task) & (board.setting == setting) & (board.metric == metric)]
    return {str(p) for p, t in zip(rows.proxy, rows.tied_with_best) if t is True or str(t) == "True"}


def _short(value: float) -> str:
    """Three decimals, as the pages write a training accuracy; exactly 1 is written 1.0."""
    return "1.0" if value == 1.0 else f"{value:.3f}"


def _results_md_claims() -> list[str]:
    """The sentences of docs/results.md (folded) that quote the two digits folders, rebuilt from them."""
    board, costs = _board(DEFAULT), _board(CURVATURE)
    base = {r["hash"]: r["train_acc"] for r in _summary(DEFAULT)["runs"] if " on=" not in r["label"]}
    accs = list(base.values())
    mem = "memorization", "clean"
    csl = _row(board, *mem, "csl", "pearson")
    theory = "theory", "clean"
    bins = _row(board, *theory, "csl vs memorization", "binned_spearman")
    per = _row(board, *theory, "csl vs memorization", "spearman")
    secs = {p: _cost(board, p, "seconds_rel") for p in ("confident_learning", "curvature", "csg", "csl_eval")}
    ref = {m: _row(board, *mem, "reference", f"reference_{m}") for m in ("flops_rel", "seconds_rel", "seconds")}
    plain_s = _cost(costs, "csl", "seconds") / _cost(costs, "csl", "seconds_rel")
    auroc = {p: f"{_mean(board, 'mislabeled', 'noise=0.1', p, 'auroc'):.3f}"
             for p in ("aum", "loss_sensitivity", "csg", "learning_time(rule=count)")}
    assert auroc["loss_sensitivity"] == auroc["csg"]  # one figure quoted for both
    return [
        f"Base runs end at {_short(min(accs))}–{_short(max(accs))} training accuracy, mean "
        f"{sum(accs) / len(accs):.3f} over the distinct base runs",
        f"its split-half Pearson is {_mean(board, *mem, 'reference', 'reference_split_half_pearson'):.2f}",
        f"by confident learning alone ({_mean(board, *mem, 'confident_learning', 'pearson'):.2f}, no proxy tied",
        f"not by CSL ({csl['mean']:.2f} [{csl.ci_low:.2f}, {csl.ci_high:.2f}])",
        f"while aum ({auroc['aum']} as well) and loss_sensitivity and csg ({auroc['csg']}) are measurably below them",
        f"(`learning_time(rule=count)`, {auroc['learning_time(rule=count)']})",
        f"(Spearman of bin means {bins['mean']:.2f} ± {bins['std']:.2f}; "
        f"per sample {per['mean']:.2f} ± {per['std']:.2f})",
        f"(skewness {_mean(board, *theory, 'csl', 'skewness'):.1f})",
        f"moved 0.466 → {_mean(board, *mem, 'final_loss', 'spearman'):.3f} and with the privacy vulnerability "
        f"0.599 → {_mean(board, 'privacy', 'clean', 'final_loss', 'spearman'):.3f}",
        f"(confident_learning 1.64 → {secs['confident_learning']:.2f}, curvature 4.32 → {secs['curvature']:.2f}, "
        f"the input-gradient proxies 1.29 → {secs['csg']:.2f}, csl_eval 1.20 → {secs['csl_eval']:.2f})",
        f"| {ref['flops_rel']['mean']:.1f} | {ref['seconds_rel']['mean']:.1f} ± {ref['seconds_rel']['std']:.1f} "
        f"(batched: 128 models in ~{ref['seconds']['mean']:.0f} s) |",
        f"brings the wall time to ~{ref['seconds_rel']['mean']:.0f} runs' worth",
        f"their {_cost(board, 'confident_learning', 'flops_rel'):.2f}× in FLOPs cost "
        f"{secs['confident_learning']:.2f}× in seconds in this run",
        f"this machine trained the plain run in {plain_s:.2f} s",
        f"(curvature n = 10: {_cost(costs, 'curvature', 'seconds_rel'):.2f} against 6.38)",
    ]


def test_the_digits_prose_figures_are_the_committed_files() -> None:
    text = _folded(ROOT / "docs" / "results.md")
    assert [claim for claim in _results_md_claims() if claim not in text] == []


def test_the_ties_the_digits_prose_names_are_the_leaderboards() -> None:
    """'csl, csl_eval and el2n are tied at the top' (aum, loss_sensitivity, csg below), and
    confident learning alone is tied with the best Pearson with the stability reference."""
    board = _board(DEFAULT)
    assert _tied(board, "mislabeled", "noise=0.1", "auroc") == {"csl", "csl_eval", "el2n"}
    assert _tied(board, "memorization", "clean", "pearson") == {"confident_learning"}
    text = _folded(ROOT / "docs" / "results.md")
    assert "csl, csl_eval and el2n are tied at the top" in text
    for proxy in ("final_loss", "in_confidence"):  # 'Their Spearman ...': both proxies, one figure
        assert f"→ {_mean(board, 'memorization', 'clean', proxy, 'spearman'):.3f} and" in text


def test_a_moved_prose_figure_is_caught() -> None:
    """The check itself: CSL's skewness one unit of its last digit off fails that claim alone."""
    text = _folded(ROOT / "docs" / "results.md")
    said = re.search(r"\(skewness (\d+\.\d)\)", text)
    assert said
    stale = text.replace(said.group(0), f"(skewness {float(said.group(1)) + 0.1:.1f})")
    missing = [claim for claim in _results_md_claims() if claim not in stale]
    assert missing == [said.group(0)]


def _command(folder: str) -> list[str]:
    """The arguments after `python -m harness` of a folder's row in results/README.md."""
    row = next(line for line in (RESULTS / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith(f"| `{folder}/` |"))
    return shlex.split(row.rstrip(" |").rsplit("| `", 1)[1].rstrip("`"))[3:]


@pytest.mark.parametrize("folder", ["digits-default", "digits-curvature-cost"])
def test_the_quoted_command_gives_the_folders_config(folder: str) -> None:
    """Today's CLI turns the quoted command into the config the folder's summary.json records
    (recipe included: a preset whose recipe changed would train other runs); the store and
    --overwrite are where it ran, not what it computed."""
    from harness.api import build_config
    from harness.cli_parser import build_parser, run_options

    cfg = build_config(**run_options(build_parser().parse_args(_command(folder))))
    today = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    recorded = _summary(RESULTS / folder)["config"]
    skip = {"store", "overwrite", "progress"}
    assert {k: today.get(k) for k in recorded if k not in skip} == {k: v for k, v in recorded.items() if k not in skip}


def test_the_results_readme_figures_are_the_summaries() -> None:
    """results/README.md: the default's runs were all trained from an empty store, and the curvature
    folder's seed 0 ended at the training accuracy the other-machine note compares with."""
    default = _summary(DEFAULT)
    assert (len(default["trained"]), len(default["reused"])) == (len(default["runs"]), 0)
    text = _folded(RESULTS / "README.md")
    assert f"({len(default['runs'])} runs trained from an empty store" in text
    seed0 = next(r for r in _summary(CURVATURE)["runs"] if r["label"].endswith("seed0"))
    assert f"instead of {seed0['train_acc']:.4f})" in text
