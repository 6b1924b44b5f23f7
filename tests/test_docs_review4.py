"""The documentation states what the code does and what the committed results hold (a review of
the docs' concrete claims): every test a page names exists, the output files are described as
they are written, option lists match the option table, and figures quoted from `results/` are the
figures there.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "results"
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted(DOCS.glob("*.md")),
         *sorted(RESULTS.glob("*/README.md"))]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _table_row(text: str, first_cell: str) -> str:
    row = next((line for line in text.splitlines() if line.startswith(f"| {first_cell} |")), None)
    assert row is not None, f"no table row starting with {first_cell!r}"
    return row


def _auroc(folder: str, proxy: str, setting: str) -> float:
    board = pd.read_csv(RESULTS / folder / "leaderboard.csv")
    row = board[(board.proxy == proxy) & (board.setting == setting) & (board.metric == "auroc")]
    assert len(row) == 1, (folder, proxy, setting)
    return float(row["mean"].iloc[0])


# -- tests the pages name ------------------------------------------------------------------------


def test_every_test_a_page_names_exists() -> None:
    """A page that cites `tests/FILE.py::NAME` as the check behind a claim points at a real test
    (reading-results.md cited a bootstrap timing test that had moved to benchmarks/)."""
    missing = []
    for page in PAGES:
        for file, name in re.findall(r"((?:tests|benchmarks)/[\w/]+\.py)::(\w+)", _read(page)):
            path = ROOT / file
            if not path.exists() or not re.search(rf"^\s*def {name}\(", _read(path), re.M):
                missing.append(f"{page.relative_to(ROOT)}: {file}::{name}")
    assert not missing, missing


# -- the output files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness import run_experiment

    tmp = tmp_path_factory.mktemp("docs_review4")
    run_experiment(proxies="csl,final_loss", tasks="mislabeled,cost", noise_rates=[0.1], seeds=1, epochs=2,
                   executor="inprocess", store=tmp / "store", out=tmp / "out", progress=False, bootstrap=20)
    return tmp / "out"


def test_every_key_of_summary_json_is_described(small_output: Path) -> None:
    """reading-results.md's row for summary.json names every top-level key the file has (it left
    out the experiment id, the device, the outputs and phase_seconds)."""
    import json

    keys = json.loads((small_output / "summary.json").read_text())
    row = _table_row(_read(DOCS / "reading-results.md"), "`summary.json`")
    assert [k for k in keys if f"`{k}`" not in row] == []


def test_the_leaderboard_md_row_says_one_table_per_task_of_its_headline_metric(small_output: Path) -> None:
    """leaderboard.md holds one table per task (its headline metric, settings as columns), not one
    per task and setting; the row names each task's headline metric."""
    from harness.leaderboard import headline_metrics
    from harness.tasks import TASKS

    headlines = headline_metrics(TASKS)
    written = re.findall(r"^### (\w+): (\w+) ", (small_output / "leaderboard.md").read_text(), re.M)
    assert written == [(t, headlines[t]) for t in ("mislabeled", "cost")]  # in the order of `tasks`
    row = _table_row(_read(DOCS / "reading-results.md"), "`leaderboard.md`")
    assert "one per task and setting" not in row
    assert [(t, m) for t, m in headlines.items() if not re.search(rf"{t}[^;]*: `{m}`", row)] == []


# -- option lists --------------------------------------------------------------------------------


def test_the_keywords_said_to_default_to_the_presets_are_exactly_those() -> None:
    """quickstart.md lists the run_experiment keywords whose default is the preset's; the list
    matches the option table (it missed augment_epochs)."""
    from harness.options import OPTIONS

    text = " ".join(_read(DOCS / "quickstart.md").split())
    sentence = re.search(r";([^;]*) default to the preset's", text)
    assert sentence, "quickstart.md no longer says which keywords default to the preset's"
    listed = set(re.findall(r"`(\w+)`", sentence.group(1)))
    assert listed == {o.keyword for o in OPTIONS if o.shown_default == "the preset's"}


def test_the_curvature_step_range_in_the_bad_input_list_is_the_proxys() -> None:
    """experiments.md said `h` must be in (0, 1]; the proxy refuses steps below MIN_STEP."""
    from harness.errors import HarnessError
    from proxies.curvature import MIN_STEP
    from proxies.registry import make_proxy

    with pytest.raises(HarnessError, match="at least"):
        make_proxy("curvature", h=MIN_STEP / 10)
    text = " ".join(_read(DOCS / "experiments.md").split())
    low = re.search(r"`h` must be finite, in \[([0-9.e-]+), 1\]", text)
    assert low and float(low.group(1)) == MIN_STEP


def test_the_preset_table_says_which_presets_train_npz_data_like_digits() -> None:
    """quick and cpu-full send npz: data to the digits recipe (an MLP); the presets table said so
    for digits only."""
    from harness.presets import PRESETS

    text = _read(DOCS / "experiments.md")
    for name in PRESETS.keys():
        entry = PRESETS.get(name)
        if "npz" in entry.by_dataset:
            assert entry.for_dataset("npz:x.npz") == entry.by_dataset["digits"]
            assert "`npz:`" in _table_row(text, f"`{name}`"), name


def test_extending_is_listed_with_all_four_registries() -> None:
    row = _table_row(_read(DOCS / "index.md"), "[Extending memprox](extending.md)")
    assert all(word in row for word in ("a proxy", "a task", "an executor", "a dataset")), row


def test_only_metrics_with_intervals_are_said_to_have_them() -> None:
    """Cost rows (and the theory statistics) carry no interval, so 'every metric comes with a 95 %
    bootstrap confidence interval' was not so."""
    board = pd.read_csv(RESULTS / "digits-default" / "leaderboard.csv")
    assert board[board.task == "cost"]["ci_low"].isna().all()
    scored = board[board.task.isin(["mislabeled", "duplicates", "memorization", "privacy"])
                   & (board.proxy != "reference") & ~board.metric.str.endswith("_topk")]
    assert scored["ci_low"].notna().all()
    for page in (ROOT / "README.md", DOCS / "index.md"):
        text = " ".join(_read(page).split())
        assert "Every metric comes with" not in text, page
        assert "Every detection, similarity and privacy metric comes with a 95 %" in text, page


def test_npz_fingerprint_is_described_as_the_files_hash(tmp_path: Path) -> None:
    """reliability.md said npz: data are fingerprinted by a hash of the arrays; the loader hashes
    the file, so the same arrays saved compressed are another dataset (new runs)."""
    from harness.datasets import load_dataset

    x, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "small.npz", x=x, y=y)
    prints = {load_dataset(f"npz:{tmp_path / f}", cache_dir=tmp_path / "cache").fingerprint
              for f in ("plain.npz", "small.npz")}
    assert len(prints) == 2
    text = " ".join(_read(DOCS / "reliability.md").split())
    assert "for `npz:` and `hf:` data a hash of the arrays" not in text
    assert "for `npz:` data the file's SHA-256" in text


# -- figures quoted from results/ ----------------------------------------------------------------


def test_the_digits_eq7_learning_time_figure_is_the_leaderboards() -> None:
    """results.md quoted the paper's Eq. 7 rule at 0.691 beside a table (and leaderboard) of 0.692."""
    text = " ".join(_read(DOCS / "results.md").split())
    quoted = re.search(r"the paper's Eq\. 7 rule \((0\.\d{3})\) on the same gradients", text)
    assert quoted
    assert float(quoted.group(1)) == round(_auroc("digits-default", "learning_time", "noise=0.1"), 3)


def test_the_resnet9_quarter_gain_range_is_the_leaderboards() -> None:
    """cifar10-full-cpu/README.md: the AUROC gained by the loss-based proxies with resnet9_quarter
    (final loss gains 0.003, which the stated 0.004-0.006 left out)."""
    text = " ".join(_read(RESULTS / "cifar10-full-cpu" / "README.md").split())
    stated = re.search(r"and (0\.\d{3})–(0\.\d{3}) more AUROC for the loss-based proxies", text)
    assert stated
    gains = [_auroc("cifar10-full-cpu/resnet9-quarter/mislabeled", p, "noise=0.1")
             - _auroc("cifar10-full-cpu/mislabeled", p, "noise=0.1")
             for p in ("csl", "csl_eval", "final_loss", "in_confidence", "aum")]
    assert (float(stated.group(1)), float(stated.group(2))) == (round(min(gains), 3), round(max(gains), 3))


# -- counts and benchmark pages ------------------------------------------------------------------


def test_the_bad_input_case_count_is_the_suites() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bad_input_cases", ROOT / "tests" / "test_bad_input.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stated = re.search(r"the bad-input suite \((\d+) cases\)", " ".join(_read(DOCS / "testing.md").split()))
    assert stated and int(stated.group(1)) == len(module.CASES)


def test_bench_ray_is_described_as_it_runs() -> None:
    """benchmarks/README.md's bench_ray section: its default command runs what the script's
    docstring says (the local pool, not `local --threads 2`), and its pointer for details names a
    section that exists."""
    import ast

    script = ROOT / "benchmarks" / "bench_ray.py"
    doc = ast.get_docstring(ast.parse(_read(script)))
    said = re.search(r"python benchmarks/bench_ray.py +# (.*)", doc).group(1).strip()
    readme = _read(ROOT / "benchmarks" / "README.md")
    assert re.search(r"python benchmarks/bench_ray.py +# (.*)", readme).group(1).strip() == said
    assert "the README's \"Running on a cluster\"" not in " ".join(readme.split())
    assert "## Ray and the local executor on one machine" in _read(DOCS / "performance.md").replace("###", "##")


def test_the_presets_said_to_reach_the_memorization_regime_do() -> None:
    """experiments.md said every CPU preset trains into the memorization regime; the committed
    cpu-full run (its current model) fits 3.8 % of the flipped labels."""
    import json

    summary = json.loads((RESULTS / "cifar10-full-cpu" / "resnet9-quarter" / "mislabeled" / "summary.json").read_text())
    assert summary["config"]["preset"] == "cpu-full" and summary["config"]["model"] == "resnet9_quarter"
    fitted = [run["flipped_fit"] for run in summary["runs"]]
    assert fitted and max(fitted) < 0.1
    text = " ".join(_read(DOCS / "experiments.md").split())
    section = text.split("## Why the presets fit the noisy labels", 1)[1].split("##", 1)[0]
    assert "The CPU presets train into the memorization regime" not in section
    stated = re.search(r"`cpu-full` does not: on full CIFAR-10 it fits ([\d.]+) % of the flipped labels", section)
    assert stated and float(stated.group(1)) == round(100 * max(fitted), 1)


def test_what_harness_list_prints_of_the_datasets_is_what_the_page_says(capsys: pytest.CaptureFixture) -> None:
    """datasets.md said `harness list` prints the same as its generated table (names and
    descriptions); it prints the names on one line."""
    from harness.cli import main
    from harness.datasets import DATASETS

    assert main(["list"]) in (0, None)
    printed = capsys.readouterr().out
    line = next(s for s in printed.splitlines() if s.startswith("Datasets:"))
    assert all(name in line for name in DATASETS)
    assert not any(entry.description in printed for entry in DATASETS.values())
    text = " ".join(_read(DOCS / "datasets.md").split())
    assert "(`python -m harness list` prints the same names, without the descriptions)" in text
