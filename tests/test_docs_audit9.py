"""The user docs checked claim by claim against the code (ninth review): the classes of statement
that go stale as the code moves are checked mechanically over every page, so a renamed flag,
module, test or constant fails here instead of misleading a reader.

- every `--flag` a page names is a flag of `python -m harness` (or of the other tool named on
  that line: pytest, pip, ray, sbatch, benchmarks/bench_ray.py);
- every `python -m harness run ...` command in the pages parses and passes validation;
- every `harness.x.y` / `proxies.x` / `baselines.x` dotted name imports and resolves;
- every repository path (`harness/...`, `tests/...`, ...) and every test a page names exists;
- every `[text](page.md#anchor)` anchor resolves (mkdocs checks docs/, not README.md);
- the bounds, task-parameter defaults and output columns the pages quote are the code's.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import warnings
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The user docs: what this file holds to the code.
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
#: Pages that also quote commands (checked for the commands only).
COMMAND_PAGES = [*PAGES, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "results").rglob("README.md"))]
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.M | re.S)

#: Flags of other tools the pages quote, each with the tool it belongs to (checked to be no flag of
#: `python -m harness`, so a harness flag can never hide here).
FOREIGN_FLAGS = {
    "--dist": "pytest-xdist", "--benchmark-only": "pytest-benchmark", "--strict": "mkdocs build",
    "--no-deps": "pip", "--target": "pip", "--upgrade": "pip", "--generate": "ray get-auth-token",
    "--head": "ray start", "--port": "ray start", "--address": "ray start", "--temp-dir": "ray start",
    "--signal": "sbatch", "--env-file": "docker run", "--seed": "the example of an abbreviated flag that is refused",
    "--nthreads": "dask worker", "--nworkers": "dask worker", "--resources": "dask worker", "--me": "squeue",
    "--preserve-status": "timeout",
}
#: Flags of benchmarks/bench_ray.py the pages quote: checked against its argument parser.
BENCH_RAY_FLAGS = ("--no-overhead", "--configs")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _folded(path: Path) -> str:
    """A page with its line breaks folded, so a sentence matches wherever the page wraps it."""
    return " ".join(_read(path).split())


def _cli_flags(parser: argparse.ArgumentParser | None = None) -> set[str]:
    """The flags of `python -m harness` and of every subcommand, nested ones included."""
    from harness.cli import build_parser

    flags: set[str] = set()
    for action in (parser or build_parser())._actions:
        flags |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _cli_flags(sub)
    return flags


# -- flags and commands --------------------------------------------------------------------------


def test_every_flag_a_page_names_is_a_flag_of_the_cli_or_of_the_tool_named() -> None:
    flags = _cli_flags()
    assert not flags & set(FOREIGN_FLAGS), "a flag of `python -m harness` is listed as another tool's"
    bench = _read(ROOT / "benchmarks" / "bench_ray.py")
    assert all(f'"{flag}"' in bench for flag in BENCH_RAY_FLAGS), "bench_ray.py lost a flag the pages quote"
    unknown = []
    for page in PAGES:
        for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*)", _read(page)):
            if m.group(1) not in flags | set(FOREIGN_FLAGS) | set(BENCH_RAY_FLAGS):
                unknown.append(f"{page.relative_to(ROOT)}: {m.group(1)}")
    assert not unknown, unknown


def _harness_commands() -> list[tuple[str, str]]:
    """(where, arguments after `run`) of every `python -m harness run` / `memprox run` in the pages."""
    found = []
    for page in COMMAND_PAGES:
        text = _read(page).replace("\\\n", " ")
        for m in re.finditer(r"(?:python -m harness|memprox) run((?: [^`\n#|]*)?)", text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", m.group(1).strip().rstrip(").,;")))
    return found


def test_the_pages_quote_many_commands() -> None:
    assert len(_harness_commands()) >= 30  # the pattern still finds them


@pytest.mark.parametrize(("where", "arguments"), [pytest.param(w, a, id=w) for w, a in _harness_commands()])
def test_every_run_command_a_page_quotes_passes_validation(where: str, arguments: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed as the CLI parses it and validated as the CLI validates it (nothing loads or trains)."""
    from harness.api import experiment_config
    from harness.cli import build_parser, run_options

    argv = [a for a in shlex.split(arguments) if a not in ("...", "…")]
    if "--help" in argv or "exec" in argv:
        pytest.skip("not a run")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["run", *argv])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment_config(**run_options(args))


# -- names, paths, tests, anchors ----------------------------------------------------------------


def _resolve(name: str) -> object:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(name)


def test_every_dotted_name_a_page_cites_resolves() -> None:
    names = {(page.relative_to(ROOT), m.group(1).rstrip("."))
             for page in PAGES
             for m in re.finditer(r"(?<![\w/.])((?:harness|proxies|baselines)(?:\.[A-Za-z_]\w*)+)", _read(page))
             if not m.group(1).endswith((".md", ".py"))}  # a file name (proxies.md), not a module
    assert len(names) >= 20
    broken = []
    for page, name in sorted(names, key=str):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as error:
            broken.append(f"{page}: {name} ({error})")
    assert not broken, broken


def test_every_repository_path_a_page_cites_exists() -> None:
    folders = "harness|proxies|baselines|tests|benchmarks|examples|results|\\.ci"
    pattern = re.compile(rf"(?<![\w/.~-])((?:{folders})/[\w./-]*)")
    missing = []
    for page in PAGES:
        for m in pattern.finditer(_read(page)):
            path = m.group(1).rstrip(".,:;)")
            if path.startswith("results/latest"):  # what a user's run writes, not committed
                continue
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, missing


def test_every_test_a_page_names_by_function_exists() -> None:
    """test_docs_review4 checks `tests/FILE.py::NAME`; pages also cite tests by bare name."""
    source = "\n".join(_read(p) for p in [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
    defined = set(re.findall(r"^\s*def (test_\w+)\(", source, re.M))
    named = {(page.relative_to(ROOT), name) for page in PAGES
             for name in re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)`", _read(page))
             if name not in ("test_acc",)}  # summary.json's held-out accuracy, not a test
    assert [f"{page}: {name}" for page, name in sorted(named, key=str) if name not in defined] == []


def _anchors(page: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    headings = re.findall(r"^#+\s+(.*)$", FENCE.sub("", _read(page)), re.M)
    return {slugify(heading.replace("`", "").strip(), "-") for heading in headings}


def test_every_anchor_a_page_links_to_exists() -> None:
    pytest.importorskip("markdown")
    checked, broken = 0, []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+\.md)?#([\w-]+)\)", _read(page)):
            file, anchor = target
            path = (page.parent / file) if file else page
            checked += 1
            if anchor not in _anchors(path):
                broken.append(f"{page.relative_to(ROOT)}: {file}#{anchor}")
    assert checked >= 20
    assert not broken, broken


# -- numbers the pages quote ---------------------------------------------------------------------


def test_the_bounds_in_the_bad_input_section_are_the_codes() -> None:
    from harness.config import FEW_RESAMPLES, MAX_IMPLIED_BYTES
    from harness.values import (
        MAX_BATCH_SIZE,
        MAX_BOOTSTRAP,
        MAX_EPOCHS,
        MAX_LR,
        MAX_SEED,
        MAX_SEEDS,
        MAX_THREADS,
        MIN_GPUS_PER_RUN,
        MIN_LR,
    )

    text = _folded(DOCS / "experiments.md")
    said = re.search(r"`--epochs` ≤ ([\d,]+) and its per-epoch records \(epochs × N float32\) ≤ (\d+) GiB, "
                     r"`--seeds` ≤ ([\d,]+) seeds, each in 0\.\.2³²−1 .*?`--threads`/`--workers` ≤ ([\d,]+), "
                     r"`--bootstrap` ≤ ([\d,]+) and its resamples at this N ≤ (\d+) GiB, `--batch-size` ≤ 2\^(\d+), "
                     r"`--lr` in \[([\d.e-]+), ([\d.e]+)\]", text)
    assert said, "experiments.md no longer states the bounds in this form"
    number = [int(said.group(i).replace(",", "")) for i in (1, 2, 3, 4, 5, 6, 7)]
    assert number == [MAX_EPOCHS, MAX_IMPLIED_BYTES // 2**30, MAX_SEEDS, MAX_THREADS, MAX_BOOTSTRAP,
                      MAX_IMPLIED_BYTES // 2**30, MAX_BATCH_SIZE.bit_length() - 1]
    assert (float(said.group(8)), float(said.group(9))) == (MIN_LR, MAX_LR)
    assert MAX_SEED == 2**32 - 1
    assert f"`--gpus-per-run` in [{MIN_GPUS_PER_RUN:g}, 1]" in text
    assert f"1 to {FEW_RESAMPLES - 1} is allowed with a warning" in text


def _stated_task_defaults() -> list[tuple[str, str, str]]:
    """(task, parameter, what the page gives in parentheses) from the "Parameters:" paragraph."""
    text = _folded(DOCS / "tasks-and-metrics.md")
    paragraph = text.split("Parameters: ", 1)[1].split(" ## ", 1)[0]
    stated, task = [], ""
    for m in re.finditer(r"`(\w+)?\.(\w+)` \(([^()]*(?:\([^()]*\)[^()]*)*)\)", paragraph):
        task = m.group(1) or task
        stated.append((task, m.group(2), m.group(3)))
    return stated


def test_every_task_parameter_the_page_lists_is_declared_with_that_default() -> None:
    from harness.tasks import TASKS
    from harness.tasks.suspects import MAX_K
    from harness.tasks.theory import MAX_PER_CLASS

    stated = _stated_task_defaults()
    declared = {(name, key) for name in TASKS.keys() for key in TASKS.get(name).defaults}
    assert {(t, p) for t, p, _ in stated} == declared, "the page lists other parameters than the tasks declare"
    for task, param, said in stated:
        first = said.split(",")[0].split(":")[0].strip()
        default = TASKS.get(task).defaults[param]
        try:
            value = ast.literal_eval(first)
        except (ValueError, SyntaxError):
            value = first
        if isinstance(value, (int, float, bool)) or re.fullmatch(r"[a-z_]+", str(value)):
            assert value == default, f"{task}.{param}: the page says {first}, the task {default!r}"
    maxima = {(t, p): int(m.group(1)) for t, p, s in stated if (m := re.search(r"at most (\d+)", s))}
    assert maxima == {("theory", "per_class"): MAX_PER_CLASS, ("suspects", "k"): MAX_K,
                      ("suspects", "duplicate_threshold"): 1}


def test_the_curvature_defaults_in_the_proxy_table_are_the_proxys() -> None:
    from proxies.curvature import MIN_STEP
    from proxies.registry import PROXIES

    row = next(r for r in _read(DOCS / "proxies.md").splitlines() if r.startswith("| `curvature` |"))
    said = re.search(r"`n` = (\d+) draws.*step `h` = ([\d.e-]+) \(in \[([\d.e-]+), 1\].*`every` = (\d+) epochs", row)
    assert said
    defaults = PROXIES.get("curvature").defaults
    assert (int(said.group(1)), float(said.group(2)), int(said.group(4))) == (defaults["n"], defaults["h"],
                                                                              defaults["every"])
    assert float(said.group(3)) == MIN_STEP


def test_the_leaderboard_columns_the_pages_list_are_the_files() -> None:
    from harness.leaderboard import COLUMNS

    outputs = _folded(DOCS / "experiments.md").split("## Outputs", 1)[1]
    listed = re.search(r"`leaderboard\.csv` \(([^)]*)\)", outputs).group(1)
    assert [c.strip() for c in listed.split(",")] == COLUMNS
    row = next(r for r in _read(DOCS / "reading-results.md").splitlines() if r.startswith("| `leaderboard.csv` |"))
    assert re.findall(r"\b(?:mean|std|n_seeds|ci_low|ci_high|p_vs_best|tied_with_best|cost_\w+)\b", row) == COLUMNS[6:]


# -- the files a run writes, as reading-results.md describes them ---------------------------------


@pytest.fixture(scope="module")
def suspects_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness import run_experiment

    tmp = tmp_path_factory.mktemp("docs_audit9")
    run_experiment(proxies="csl,final_loss", tasks="mislabeled,suspects,cost,privacy", noise_rates=[0.1], seeds=1,
                   epochs=2, executor="inprocess", store=tmp / "store", out=tmp / "out", progress=False,
                   bootstrap=100, task_args={"memorization": {"k": 4}})
    return tmp / "out"


def test_the_files_the_table_names_are_written(suspects_output: Path) -> None:
    table = _read(DOCS / "reading-results.md").split("## ", 1)[0]
    for name in ("leaderboard.csv", "leaderboard.md", "raw.csv", "summary.json", ".memprox-outputs.json",
                 "scores/noise=0.1_seed0.csv", "suspects/suspects_seed0.csv", "suspects/duplicates.csv",
                 "figures/suspects_seed0.png"):
        assert (suspects_output / name).is_file(), name
    for pattern in ("`scores/<setting>_seed<k>.csv`", "`suspects/suspects_seed<s>.csv`", "`suspects/duplicates.csv`"):
        assert pattern in table


def test_every_column_of_the_suspects_csv_is_described(suspects_output: Path) -> None:
    """The suspects row named rank, file, labels and p_label but not `label_name`/`predicted_name`."""
    columns = pd.read_csv(suspects_output / "suspects" / "suspects_seed0.csv", nrows=1).columns
    row = next(r for r in _read(DOCS / "reading-results.md").splitlines() if r.startswith("| `suspects/suspects_seed"))
    undescribed = [c for c in columns if c not in ("csl", "final_loss")  # the proxies: "every proxy's score"
                   and f"`{c}`" not in row]
    assert undescribed == []
    pairs = pd.read_csv(suspects_output / "suspects" / "duplicates.csv", nrows=1).columns
    row = next(r for r in _read(DOCS / "reading-results.md").splitlines() if r.startswith("| `suspects/duplicates"))
    assert [c for c in pairs if c not in ("label_a", "label_b", "file_a", "file_b") and c not in row] == []


def test_every_task_whose_rows_have_no_interval_is_named(suspects_output: Path) -> None:
    """reading-results.md named cost, the reference rows and theory as the rows without an interval;
    the suspects task's `predicted_other_at_k` has none either (a description, not a resampled
    metric), and its Markdown cells read `mean ± std` as cost's do."""
    board = pd.read_csv(suspects_output / "leaderboard.csv")
    without = set(board.groupby("task")["ci_low"].apply(lambda c: c.isna().all()).loc[lambda s: s].index)
    assert without == {"cost", "suspects"}
    text = _folded(DOCS / "reading-results.md")
    sentence = re.search(r"Rows without replicates \(([^)]*)\)", text).group(1)
    assert all(task in sentence for task in without), sentence
    markdown = _read(suspects_output / "leaderboard.md")
    assert "### suspects: predicted_other_at_k (mean ± std" in markdown
    assert "Cost and suspects cells, which have no interval, read `mean ± std`" in text


def test_what_cost_is_measured_on_is_what_it_plans(tmp_path: Path) -> None:
    """tasks-and-metrics.md said suspects' clean run is shared with cost; with mislabeled selected
    first, cost reads mislabeled's first setting instead (cost.py: the first other task's first setting)."""
    from harness.api import experiment_config
    from harness.experiment import Experiment

    cfg = experiment_config(proxies="csl", tasks="mislabeled,suspects,cost", noise_rates=[0.05, 0.1], seeds=1,
                            store=tmp_path / "store")
    labels = {s.label for task, s, _ in Experiment(cfg).plan.settings if task.name == "cost"}
    assert labels == {"noise=0.05"}
    text = _folded(DOCS / "tasks-and-metrics.md")
    assert "(shared with `cost` and the reference tasks)" not in text
    assert "on the runs of the first other selected task's first setting" in text


def test_the_eval_pass_flops_ratio_names_the_epochs_it_holds_for(suspects_output: Path) -> None:
    """extending.md gave a last-epoch eval pass "1.09× FLOPs on digits" with no epoch count: that is
    4 epochs (the example's); at the quick preset's 40 it is 1.01×. The pass is one epoch-sized
    forward against E training epochs, so the 2-epoch ratio r gives 1 + (r - 1) * 2 / E."""
    from harness.presets import PRESETS

    board = pd.read_csv(suspects_output / "leaderboard.csv")
    at_two = board[(board.task == "cost") & (board.proxy == "final_loss") & (board.metric == "flops_rel")]["mean"]
    extra = float(at_two.iloc[0]) - 1
    text = _folded(DOCS / "extending.md")
    said = re.search(r"adds an eval pass \(([\d.]+)× FLOPs on digits at the example's (\d+) epochs, ([\d.]+)× at "
                     r"the quick preset's (\d+)", text)
    assert said, "extending.md no longer says at which epochs the eval pass costs what"
    for ratio, epochs in ((said.group(1), said.group(2)), (said.group(3), said.group(4))):
        assert float(ratio) == round(1 + extra * 2 / int(epochs), 2)
    assert int(said.group(4)) == PRESETS.get("quick").for_dataset("digits").recipe.epochs
    assert "epochs=4)" in text.split("## Adding a proxy", 1)[1].split("###", 1)[0]


def test_what_all_and_the_default_give_in_the_tracker_is_what_the_page_says() -> None:
    """own-training-loop.md said `scores("all")` is "every proxy the tracker can compute"; after
    a loop that called eval_epoch at the end only (as the page's example does), "all" refuses
    (csl_eval needs a pass after every epoch) while `scores()` gives the rest."""
    import torch

    from harness import SampleTracker
    from harness.errors import HarnessError

    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    model = torch.nn.Linear(5, 3)
    tracker = SampleTracker(32)
    for _ in range(3):
        for idx in torch.arange(32).split(8):
            logits = model(x[idx])
            tracker.update(idx, logits=logits, labels=y[idx])
        tracker.end_epoch()
    tracker.eval_epoch(model, (x, y))
    columns = set(tracker.scores().columns)
    assert {"csl", "final_loss", "in_confidence"} <= columns and "csl_eval" not in columns
    with pytest.raises(HarnessError, match="after every epoch"):
        tracker.scores("all")
    text = _folded(DOCS / "own-training-loop.md")
    assert "`\"all\"` (every proxy the tracker can compute)" not in text
    assert "without `eval_epoch` after every epoch it refuses" in text


def test_the_hf_option_table_lists_the_loaders_options_and_defaults() -> None:
    from harness.datasets import hf

    rows = [r for r in _read(DOCS / "integrations.md").splitlines() if re.match(r"\| `\w+=", r)]
    assert [re.match(r"\| `(\w+)=", r).group(1) for r in rows] == list(hf._OPTIONS)
    cells = {re.match(r"\| `(\w+)=", r).group(1): [c.strip() for c in r.strip("|").split("|")] for r in rows}
    assert cells["max_length"][2] == str(hf._DEFAULT_MAX_LENGTH)
    assert cells["split"][2] == "`train`"


def test_the_image_types_the_datasets_page_lists_are_the_loaders() -> None:
    from harness.datasets import imagefolder

    text = _folded(DOCS / "datasets.md")
    read = re.search(r"Images: files ending in `([^`]*)`", text).group(1).split()
    assert tuple(read) == imagefolder._IMG_EXTENSIONS
    skipped = re.findall(r"`(\.\w+)`", text.split("images of a type not read (", 1)[1].split(")", 1)[0])
    assert skipped and set(skipped) <= set(imagefolder._SKIPPED_IMAGES)


#: Selections and parameters the pages quote as bad input: each must be refused, as they say.
REFUSED_EXAMPLES = {"curvature(h=1e999)", "el2n(window=0.1,window=0.5)", "late_loss.fractoin=0.3",
                    "memorisation.fraction=0.5", "nosuch.k=1"}


def test_every_proxy_variant_and_parameter_a_page_quotes_is_valid_or_quoted_as_refused() -> None:
    from harness.errors import HarnessError
    from harness.tasks import TASKS
    from proxies.registry import PROXIES, resolve_proxies

    proxies = "|".join(sorted(PROXIES.keys(), key=len, reverse=True))
    text = "\n".join(_read(page) for page in PAGES)
    variants = set(re.findall(rf"`((?:{proxies})\([^`]*\))`", text))
    parameters = set(re.findall(r"`(?:--(?:proxy|task)-arg )?([a-z]\w*\.\w+=[^`\s]*)`", text))
    assert len(variants) >= 3 and len(parameters) >= 5
    for variant in sorted(variants):
        if variant in REFUSED_EXAMPLES:
            with pytest.raises(HarnessError):
                resolve_proxies(variant, {})
        else:
            resolve_proxies(variant, {})
    for parameter in sorted(parameters):
        owner, name = parameter.split("=", 1)[0].split(".")
        declared = (PROXIES.get(owner).defaults if owner in PROXIES.keys()
                    else TASKS.get(owner).defaults if owner in TASKS.keys() else {})
        assert (name in declared) != (parameter in REFUSED_EXAMPLES), parameter


def test_the_regimes_paragraph_gives_each_runs_own_epochs() -> None:
    """results.md called the four runs between the regimes "same network, 16 epochs"; the cpu-full
    run trained 20 epochs and the GPU run is ResNet-18 at 40 (their summary.json)."""
    import json

    results = ROOT / "results"
    runs = {"cpu-full": results / "cifar10-full-cpu" / "mislabeled",
            "augment-8": results / "cifar10-full-cpu" / "regimes" / "augment-8-of-16",
            "off": results / "cifar10-full-cpu" / "regimes" / "augment-off-16",
            "gpu": results / "cifar10-full-gpu" / "mislabeled"}
    config = {k: json.loads(_read(v / "summary.json"))["config"] for k, v in runs.items()}
    epochs = {k: c["recipe"]["epochs"] for k, c in config.items()}
    assert epochs == {"cpu-full": 20, "augment-8": 16, "off": 16, "gpu": 40}
    assert config["gpu"]["model"] == "resnet18" and config["off"]["model"] == "small_cnn"
    text = _folded(DOCS / "results.md")
    assert "(same network, 16 epochs, 10 % noise, 1 seed)" not in text
    said = re.search(r"about 1 % \(cpu-full, (\d+) epochs\), 17 % \((\d+) epochs, .*?39 % \((\d+) epochs, "
                     r"no augmentation\), 100 % \(ResNet-18 on the GPU, (\d+) epochs\)", text)
    assert said and [int(g) for g in said.groups()] == [20, 16, 16, 40]


def test_every_metric_of_the_attack_rows_is_named(suspects_output: Path) -> None:
    """privacy.md listed the LiRA rows under proxy `reference` but not `mean_vulnerability`."""
    board = pd.read_csv(suspects_output / "leaderboard.csv")
    metrics = set(board[(board.task == "privacy") & (board.proxy == "reference")]["metric"])
    assert {"lira_auroc", "mean_vulnerability"} <= metrics
    bullet = _folded(DOCS / "privacy.md").split("**The attack**", 1)[1].split("- **", 1)[0]
    assert [m for m in sorted(metrics) if f"`{m}`" not in bullet] == []


def test_every_entry_point_group_a_page_names_is_a_registrys() -> None:
    from harness.datasets import ENTRY_POINT_GROUP as datasets
    from harness.executors import ENTRY_POINT_GROUP as executors
    from harness.tasks.base import ENTRY_POINT_GROUP as tasks
    from proxies.registry import ENTRY_POINT_GROUP as proxies

    named = {g for page in PAGES for g in re.findall(r"\bmemprox\.[a-z_]+\b", _read(page))}
    assert named == {datasets, executors, tasks, proxies}


def test_the_wait_bounds_the_pages_quote_are_the_tests() -> None:
    """reliability.md said the bad-address tests check exit 2 "within 15 s"; they allow 15 + 10 s
    (testing.md's 25 s), and the local pool's Ctrl-C test allows 10 s (testing.md)."""
    ray_tests = _read(ROOT / "tests" / "test_ray_safety.py")
    bad_address = ray_tests.split("def test_a_bad_ray_address_is_one_error_line_in_seconds", 1)[1].split("\ndef ", 1)[0]
    bound = sum(int(term) for term in re.search(r"assert seconds < ([\d +]+)", bad_address).group(1).split("+"))
    pool = _read(ROOT / "tests" / "test_local_pool.py")
    ctrl_c = int(re.search(r"assert seconds < (\d+), f\"took \{seconds:.1f\} s to stop\"", pool).group(1))
    reliability, testing = _folded(DOCS / "reliability.md"), _folded(DOCS / "testing.md")
    said = re.search(r"malformed address and `auto` without a cluster \(exit 2 within (\d+) s", reliability)
    assert said and int(said.group(1)) == bound
    said = re.search(r"Ctrl-C stops within (\d+) s, a bad Ray address fails within (\d+) s", testing)
    assert said and (int(said.group(1)), int(said.group(2))) == (ctrl_c, bound)


def test_the_run_counts_the_pages_quote_are_the_plans(tmp_path: Path) -> None:
    """README, performance.md and results.md quote the default run's 492 runs; how-it-works.md
    says `--proxies all` trains 1 base + 2 SSFT + 3 fold runs per setting and seed."""
    from harness.api import experiment_config
    from harness.experiment import Experiment

    default = Experiment(experiment_config(store=tmp_path / "store")).plan
    one = Experiment(experiment_config(proxies="all", tasks="mislabeled", noise_rates=[0.1], seeds=1,
                                       store=tmp_path / "store")).plan
    assert len(one.runs) == 1 + 2 + 3
    assert "exactly 1 base run + 2 SSFT runs + 3 confident-learning folds" in _folded(DOCS / "how-it-works.md")
    for page in (ROOT / "README.md", DOCS / "performance.md"):
        assert f"{len(default.runs)} digits runs, empty store)" in _folded(page), page
    assert f"for all {len(default.runs)} runs" in _folded(DOCS / "results.md")
    assert f"16 proxies × {len(default.settings)} settings" in _folded(DOCS / "results.md")


def test_the_privacy_tables_are_the_committed_leaderboards() -> None:
    """privacy.md's proxy table (mean [CI], bold = tied) and attack table are results/digits-default's."""
    board = pd.read_csv(ROOT / "results" / "digits-default" / "leaderboard.csv")
    privacy = board[board.task == "privacy"]
    checked = 0
    for line in _read(DOCS / "privacy.md").splitlines():
        m = re.match(r"\| ([\w()=]+) \| (.*) \|$", line)
        if not m or m.group(1) not in set(privacy.proxy):
            continue
        for metric, cell in zip(("spearman", "pearson", "auroc"), m.group(2).split(" | ")):
            row = privacy[(privacy.proxy == m.group(1)) & (privacy.metric == metric)].iloc[0]
            value = f"{row['mean']:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
            assert cell == (f"**{value}**" if row.tied_with_best else value), (m.group(1), metric)
            checked += 1
    assert checked == 3 * 16
    attack = privacy[privacy.proxy == "reference"].set_index("metric")
    text = _read(DOCS / "privacy.md")
    assert f"| AUROC | {attack.loc['lira_auroc', 'mean']:.3f} ± {attack.loc['lira_auroc', 'std']:.3f} |" in text
    for metric, label in (("lira_tpr@0.001fpr", "TPR at 0.1 % FPR"), ("lira_tpr@0.01fpr", "TPR at 1 % FPR")):
        mean, std = 100 * attack.loc[metric, "mean"], 100 * attack.loc[metric, "std"]
        assert f"| {label} | {mean:.1f} % ± {std:.1f} % |" in text, label


def _interval(row: pd.Series) -> str:
    cell = " ".join([f"{row['mean']:.3f}", f"[{row.ci_low:.3f},", f"{row.ci_high:.3f}]"]).replace("-", "−")
    return f"**{cell}**" if bool(row.tied_with_best) else cell


@pytest.mark.parametrize(("folder", "header", "columns"), [
    ("cifar10-subset4000-memorization-cpu", "| proxy | Pearson | Spearman | cosine |",
     [("memorization", "pearson"), ("memorization", "spearman"), ("memorization", "cosine")]),
    ("cifar10-subset4000-privacy-mlp-cpu", "| proxy | privacy: Spearman with v |",
     [("privacy", "spearman"), ("privacy", "auroc"), ("memorization", "pearson"), ("memorization", "spearman")]),
])
def test_the_cifar10_subset_tables_are_the_committed_leaderboards(folder: str, header: str,
                                                                 columns: list[tuple[str, str]]) -> None:
    board = pd.read_csv(ROOT / "results" / folder / "leaderboard.csv")
    table = _read(DOCS / "results.md").split(header, 1)[1].split("\n\n", 1)[0]
    rows = [re.match(r"\| ([\w()=]+) \| (.*) \|$", line) for line in table.splitlines()[2:]]
    assert len(rows) >= 13
    for m in rows:
        for (task, metric), cell in zip(columns, m.group(2).split(" | ")):
            row = board[(board.task == task) & (board.proxy == m.group(1)) & (board.metric == metric)].iloc[0]
            assert cell == _interval(row), (folder, m.group(1), task, metric)


def test_the_cost_table_is_the_committed_leaderboards() -> None:
    """results.md's cost rows: the 1-thread ones from digits-curvature-cost, the run-owning proxies
    from digits-default (its first setting, the cost task's)."""
    section = _read(DOCS / "results.md").split("## Cost of each proxy", 1)[1]
    table = section.split("| proxy | FLOPs × (measured) |", 1)[1].split("\n\n", 1)[0]
    boards = {name: pd.read_csv(ROOT / "results" / name / "leaderboard.csv")
              for name in ("digits-curvature-cost", "digits-default")}
    rows = {"csl": ("digits-curvature-cost", "csl"), "csl_eval": ("digits-curvature-cost", "csl_eval"),
            "loss_sensitivity": ("digits-curvature-cost", "loss_sensitivity"),
            "curvature, n = 2": ("digits-curvature-cost", "curvature(n=2)"),
            "curvature, n = 10": ("digits-curvature-cost", "curvature"),
            "confident_learning": ("digits-default", "confident_learning"), "ssft": ("digits-default", "ssft")}
    for label, (name, proxy) in rows.items():
        line = next(r for r in table.splitlines() if r.startswith(f"| {label} |") or r.startswith(f"| {label} ("))
        cost = boards[name][(boards[name].task == "cost") & (boards[name].proxy == proxy)].set_index("metric")
        flops, seconds = line.split(" | ")[1:3]
        assert float(flops) == round(cost.loc["flops_rel", "mean"], 2), label
        mean, std = seconds.split(" ± ")
        places = len(mean.split(".")[1])
        assert (float(mean), float(std)) == (round(cost.loc["seconds_rel", "mean"], places),
                                             round(cost.loc["seconds_rel", "std"], places)), label


def test_every_page_section_a_message_points_to_exists() -> None:
    """Messages say "see 'Threads and workers' in docs/executors.md": the section must be there."""
    pointers = set()
    for path in [*(ROOT / "harness").rglob("*.py"), *(ROOT / "proxies").glob("*.py")]:
        pointers |= set(re.findall(r"see '([^']+)' in (docs/[\w-]+\.md|the README)", _read(path)))
    assert len(pointers) >= 2
    for section, page in pointers:
        path = ROOT / ("README.md" if page == "the README" else page)
        headings = {h.strip() for h in re.findall(r"^#+\s+(.*)$", FENCE.sub("", _read(path)), re.M)}
        assert section in headings, (section, page)


def test_every_keyword_a_page_passes_to_run_experiment_is_one() -> None:
    from harness.api import keywords

    valid, calls = set(keywords()), 0
    for page in PAGES:
        for m in re.finditer(r"run_experiment\(([^()]*(?:\([^()]*\)[^()]*)*)\)", _read(page), re.S):
            calls += 1
            unknown = set(re.findall(r"(?:^|[,(\s])(\w+)=", m.group(1))) - valid
            assert not unknown, (page.name, unknown)
    assert calls >= 8


def test_the_constants_the_pages_quote_are_the_codes() -> None:
    """Numbers the pages give in prose, each next to the constant that decides it."""
    from harness.datasets.base import _MIN_TEST_WITH_SUBSET
    from harness.datasets.hf import _DEFAULT_MAX_LENGTH
    from harness.ensemble import GPU_MEMORY_SHARE
    from harness.executors.base import MAX_RETRIES
    from harness.executors.local import STOP_GRACE_S
    from harness.executors.ray import LOST_AFTER_S
    from harness.near_duplicates import NEIGHBOURS, THRESHOLD
    from harness.recorders.bank import BATCH_SAMPLE_EVERY
    from harness.similarity import TIE_DRAWS
    from harness.tasks.mislabeled import MISALIGNED_MARGIN
    from harness.text_models import VOCAB_BUCKETS

    said = {
        "tasks-and-metrics.md": [f"the mean over {TIE_DRAWS:,} seeded draws",
                                 f"draws / {round(TIE_DRAWS ** 0.5)})",
                                 f"among each sample's {NEIGHBOURS} nearest",
                                 f"`duplicate_threshold` ({THRESHOLD:g})"],
        "performance.md": [f"every {BATCH_SAMPLE_EVERY}th call"],
        "experiments.md": [f"{round(100 * GPU_MEMORY_SHARE)} % of the free GPU memory"],
        "executors.md": [f"retried `MAX_RETRIES` ({MAX_RETRIES}) times", "is retried once on a new worker"],
        "cluster.md": [f"stops answering for {LOST_AFTER_S:g} s"],
        "reliability.md": [f"workers get {STOP_GRACE_S:g} s to exit"],
        "datasets.md": [f"keeps max({_MIN_TEST_WITH_SUBSET:,}, N) test samples",
                        f"(within {round(100 * MISALIGNED_MARGIN)} points)"],
        "integrations.md": [f"embedding has 2^{VOCAB_BUCKETS.bit_length() - 1} rows",
                            f"| `max_length=N` | text only: tokens kept per sample | {_DEFAULT_MAX_LENGTH} |"],
    }
    assert MAX_RETRIES == 1  # "retried once"
    missing = [(page, phrase) for page, phrases in said.items() for phrase in phrases
               if phrase not in _folded(DOCS / page)]
    assert not missing, missing


def test_every_script_a_page_names_by_file_name_exists() -> None:
    """Pages name modules and scripts by bare file name too (`held.py`, `bench_ray.py`)."""
    folders = ("harness", "proxies", "baselines", "tests", "benchmarks", "examples", "docs", "results")
    names = {p.name for folder in folders for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh")}
    named = {(page.name, n) for page in PAGES for n in re.findall(r"`([\w.-]+\.(?:py|sh))`", _read(page))}
    assert len(named) >= 8
    assert [f"{page}: {n}" for page, n in sorted(named) if n not in names] == []


def test_the_proxy_count_the_overview_gives_is_the_registrys() -> None:
    from proxies.registry import PROXIES

    words = {13: "twelve", 14: "thirteen", 15: "fourteen", 16: "fifteen", 17: "sixteen"}
    builtins = [name for name, cls in PROXIES.items() if cls.__module__.startswith("proxies.")]
    for page in (ROOT / "README.md", DOCS / "index.md"):
        assert f"CSL and {words[len(builtins)]} other proxies" in _folded(page), page
