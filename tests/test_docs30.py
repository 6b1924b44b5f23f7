"""Claims the pages make about committed runs and about what the API returns, held to the files and
the code (docs30: every command in the docs run as written).

- README.md and results.md said the GPU duplicates run carried "the nine proxies that need no input
  gradients"; eleven proxies need none (`ssft` and `confident_learning` train runs of their own), and
  the run carried the nine single-run ones.
- experiments.md said the 105 s GPU run had "every single-run proxy's recorders"; `curvature`'s were
  not among them (its summary.json lists 13 proxies).
- quickstart.md's `result.tables` example named "suspects/suspects.csv", which a one-seed experiment
  does not write; a seed's own table is "suspects/suspects_seed0.csv".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.plan_checks import INPUT_GRADIENT_RECORDERS
from harness.runspec import DataSpec, Recipe, RunSpec
from proxies import PROXIES

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "results" / "cifar10-full-gpu"


def _folded(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


def _kinds() -> tuple[set[str], set[str]]:
    """(single-run proxies, proxies that read an input gradient), from each proxy's own needs."""
    base = RunSpec(data=DataSpec(), model="mlp", recipe=Recipe(), seed=0)
    single, gradient = set(), set()
    for name in PROXIES:
        needs = PROXIES[name]().needs(base)
        if all(need.spec == base for need in needs):
            single.add(name)
        if any(r.name in INPUT_GRADIENT_RECORDERS for need in needs for r in need.recorders):
            gradient.add(name)
    return single, gradient


def test_the_proxy_kinds_are_the_ones_the_pages_name() -> None:
    single, gradient = _kinds()
    assert set(PROXIES) - single == {"ssft", "confident_learning"}
    assert gradient == {"loss_sensitivity", "csg", "learning_time", "curvature"}


def test_the_gpu_duplicates_run_carried_the_single_run_proxies_without_input_gradients() -> None:
    single, gradient = _kinds()
    carried = set(pd.read_csv(GPU / "duplicates" / "leaderboard.csv").proxy)
    assert carried == single - gradient
    no_gradient = set(PROXIES) - gradient
    assert len(no_gradient) == 11 != len(carried) == 9  # "the nine proxies that need no input gradients" was wrong
    said = "duplicates run carried only the nine single-run proxies that need no input gradients (not"
    for page in (ROOT / "README.md", ROOT / "docs" / "results.md"):
        assert said in _folded(page), page.name


def test_the_gpu_mislabeled_run_is_described_by_the_proxies_it_carried() -> None:
    single, _ = _kinds()
    proxies = json.loads((GPU / "mislabeled" / "summary.json").read_text())["config"]["proxies"].split(",")
    variants = {re.sub(r"\(.*\)", "", p) for p in proxies}
    assert single - variants == {"curvature"}
    assert len(proxies) == 13
    assert ("105 s for the run with the recorders of every single-run proxy but `curvature` (the 13 proxies in"
            in _folded(ROOT / "docs" / "experiments.md"))


def test_the_tables_example_names_a_file_a_one_seed_experiment_writes(tmp_path: Path) -> None:
    """The quickstart's example key is one `result.tables` holds after a one-seed suspects call (the
    combined suspects.csv only comes with two or more seeds), and the one the API's docstring names."""
    from harness import run_experiment

    source = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    named = re.search(r"result\.tables\s+# [^\n]*e\.g\. \"([^\"]+)\"", source)
    assert named, "quickstart.md's result.tables line lost its example"
    result = run_experiment(proxies="csl", tasks="suspects", seeds=1, epochs=1, subset=200, progress=False,
                            store=tmp_path / "store", task_args=["suspects.duplicates=off"])
    assert named.group(1) in result.tables
    assert "suspects/suspects.csv" not in result.tables
    assert f'result.tables["{named.group(1)}"]' in (ROOT / "harness" / "api.py").read_text(encoding="utf-8")


def test_the_fit_experiments_md_quotes_is_the_committed_default_runs() -> None:
    """'flipped_fit 0.57 to 0.76 across noise rates' and 'digits 0.966–0.969 at 10 % noise, 3 seeds'
    are the base runs of results/digits-default (the README command); a rerun here (Ray, 2 workers)
    gave the same numbers bitwise."""
    runs = json.loads((ROOT / "results" / "digits-default" / "summary.json").read_text())["runs"]
    fits = [run["flipped_fit"] for run in runs if "flipped_fit" in run]
    accs = [run["train_acc"] for run in runs
            if "flipped_fit" in run and run["label"].startswith("digits noise=0.1 mlp seed")]
    assert len(fits) == 12 and len(accs) == 3
    page = _folded(ROOT / "docs" / "experiments.md")
    assert f"`flipped_fit` {min(fits):.2f} to {max(fits):.2f} across noise rates" in page
    assert f"digits {min(accs):.3f}–{max(accs):.3f} at 10 % noise, 3 seeds" in page


@pytest.mark.slow
def test_the_table_the_quickstart_measures_is_the_calls(tmp_path: Path) -> None:
    """The 40-epoch table of 'The harness from Python' and the sentence on `epochs=5` (final_loss tied
    with the best there), from the calls the page names."""
    from harness import run_experiment

    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (csl|aum|final_loss) \| ([\d.]+ \| \[[\d.]+, [\d.]+\] \| (?:yes|no)) \|$", page, re.M))
    assert set(rows) == {"csl", "aum", "final_loss"}
    keywords = dict(proxies="csl,aum,final_loss", tasks="mislabeled", seeds=2, noise_rates=[0.1], threads=1,
                    store=tmp_path / "store", progress=False)
    board = run_experiment(**keywords).leaderboard
    for _, row in board[board.metric == "auroc"].iterrows():
        said = f"{row['mean']:.3f} | [{row.ci_low:.3f}, {row.ci_high:.3f}] | {'yes' if row.tied_with_best else 'no'}"
        assert rows[row.proxy] == said, (row.proxy, said)
    board = run_experiment(**keywords, epochs=5).leaderboard
    tied = board[(board.metric == "auroc") & (board.proxy == "final_loss")].tied_with_best
    assert bool(tied.iloc[0])
    assert "With `epochs=5`, as in the example, final_loss is tied with the best" in " ".join(page.split())
