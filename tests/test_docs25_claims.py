"""Claims of the user pages that drift silently when the code moves (docs25): the pages the home page
and the README list (every page of the site's nav), the run counts the quickstart plans, the extras
table against pyproject.toml, the retraining notice docs/store.md shows, the worker start floor and
the suggested label's memory bound the pages quote, the reserved proxy names docs/extending.md
lists, the tracker example's suggested labels and the index column that hides a copied table row.
Each reads the page and checks it against what the code plans, prints or computes, so a moved
constant, a reworded notice or a page left out of the lists fails here instead of misleading a reader."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _text(name: str) -> str:
    """A page (under docs/, or the README) with its lines folded into one, so a claim may wrap anywhere."""
    path = ROOT / name if name == "README.md" else DOCS / name
    return " ".join(path.read_text(encoding="utf-8").split())


def _block_after(page: str, marker: str) -> list[str]:
    """The lines of the first fenced block after `marker` on `page`."""
    text = (DOCS / page).read_text(encoding="utf-8")
    after = text[text.index(marker):]
    start = after.index("```")
    body = after[after.index("\n", start) + 1:]
    return body[:body.index("```")].splitlines()


def _nav_pages() -> list[str]:
    """The pages of mkdocs.yml's nav, API reference and the home page left out."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    pages = re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.M)
    return [p for p in pages if p != "index.md" and not p.startswith("api/")]


def test_every_page_of_the_site_is_listed_on_the_home_page_and_in_the_readme() -> None:
    pages = _nav_pages()
    assert len(pages) >= 18 and "integrations.md" in pages
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    table = home[home.index("## The pages"):home.index("## Specification")]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documentation = readme[readme.index("## Documentation"):readme.index("## Specification")]
    assert [p for p in pages if f"]({p})" not in table] == [], "index.md's table of pages lacks these"
    assert [p for p in pages if f"](docs/{p})" not in documentation] == [], "the README's Documentation lacks these"


def test_the_run_counts_the_quickstart_quotes_are_the_plans(tmp_path: Path) -> None:
    """The image-folder line plans its runs as any dataset does: digits gives the same structure. The
    page said '6 settings for each of 3 seeds', which with 6 runs each made 108: the cost task's
    setting trains nothing of its own (it measures on the first labeling's runs)."""
    from harness.api import experiment_config
    from harness.experiment import Experiment

    page = _text("quickstart.md")
    many = re.search(r"plans (\d+) runs \((\d+) labelings, the four noise rates and the duplicates, for each of (\d+) "
                     r"seeds, each trained (\d+) times: a base run, (\d+) `ssft` runs and (\d+) `confident_learning` "
                     r"folds; cost measures on the first labeling's runs\)", page)
    one = re.search(r"with 1 seed, ([\d,]+) images and 2 epochs \((\d+) runs\)", page)
    assert many and one, "the quickstart no longer quotes the image-folder line's run counts"
    runs, labelings, seeds, each, ssft, folds = (int(g) for g in many.groups())
    assert page.count("--proxies all --tasks mislabeled,duplicates,cost") >= 2  # the commands the counts are about
    plans = {n: Experiment(experiment_config(proxies="all", tasks="mislabeled,duplicates,cost", seeds=n,
                                             store=tmp_path / "store")).plan for n in (seeds, 1)}
    plan = plans[seeds]
    assert len(plan.runs) == runs == labelings * seeds * each and each == 1 + ssft + folds
    assert len({(spec.data, spec.seed) for spec in plan.runs}) == labelings * seeds
    assert len(plans[1].runs) == int(one.group(2)) == labelings * each


def test_the_extras_table_is_pyprojects() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    quickstart = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*?) \| .*\|$", quickstart, flags=re.M))
    assert set(rows) == set(extras), "the quickstart's extras table names other extras than pyproject.toml"

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0] for r in requirements}

    for extra in ("ray", "lightning"):  # quoted with their bounds
        assert set(re.findall(r"`([^`]+)`", rows[extra])) == set(extras[extra])
    for extra in ("hf", "docs"):  # quoted by name
        assert set(re.findall(r"`([^`]+)`", rows[extra])) == names(extras[extra])
    dev = names(extras["dev"])
    assert {"pytest", "ruff", "mypy"} <= dev and set(re.findall(r"`([^`]+)`", rows["dev"])) <= dev
    assert "all of the above" in rows["dev"]
    assert {f"memprox[{e}]" for e in extras if e != "dev"} <= set(extras["dev"])


def test_the_retraining_notice_the_store_page_shows_is_the_clis(tmp_path: Path, capsys) -> None:
    """store.md shows the line `--proxies csl`, then `--proxies csl,final_loss` print (2 seeds), and the
    rest `--proxies all` pastes after csl alone; both come from the planner, word for word."""
    from harness.api import experiment_config
    from harness.cli import main
    from harness.experiment import Experiment

    common = ["--tasks", "mislabeled", "--noise-rates", "0.1", "--seeds", "2", "--epochs", "1", "--subset", "300",
              "--device", "cpu", "--executor", "inprocess", "--no-progress", "--store", str(tmp_path / "store")]
    assert main(["run", "--proxies", "csl", *common, "--out", str(tmp_path / "a")]) == 0
    page = _text("store.md")
    paste = re.search(r"\(`e\.g\. (--proxies '[a-z_,]+')`", page)
    assert paste, "store.md no longer shows the rest --proxies all pastes"
    cfg = experiment_config(proxies="all", tasks="mislabeled", noise_rates=[0.1], seeds=2, epochs=1, subset=300,
                            device="cpu", executor="inprocess", store=tmp_path / "store")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Experiment(cfg).pending()  # the notice comes before anything trains
    notices = [str(w.message) for w in caught if "lack recorder(s)" in str(w.message)]
    assert len(notices) == 1 and notices[0].endswith(f"e.g. {paste.group(1)}")
    capsys.readouterr()
    assert main(["run", "--proxies", "csl,final_loss", *common, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err.splitlines()
    shown = _block_after("store.md", "the line is wrapped")
    assert err[0] == shown[0]
    notice = next(line for line in err if "lack recorder(s)" in line)
    assert notice == " ".join(shown[1:])


def test_the_worker_start_floor_the_executors_page_quotes_is_the_codes() -> None:
    from harness.executors.local import START_FLOOR_S

    said = re.search(r"A worker that is not ready within the limit or (\d+) s, whichever is longer",
                     _text("executors.md"))
    assert said and float(said.group(1)) == START_FLOOR_S


def test_the_suggested_label_memory_bound_the_tracker_page_quotes_is_the_codes() -> None:
    """Two float32 (N, C) arrays: 8 bytes per sample and class."""
    from harness.tracker.class_probs import DEFAULT_LIMIT_BYTES

    page = _text("own-training-loop.md")
    said = re.search(r"two float32 \(N, C\) arrays.*? at most (\d+) GiB \(N x C up to 2\^(\d+): CIFAR-100's 50,000 x "
                     r"100 takes (\d+) MB; ImageNet's 1\.28 M x 1,000 would take (\d+) GB", page)
    assert said, "own-training-loop.md no longer quotes the suggested label's memory bound"
    assert DEFAULT_LIMIT_BYTES == int(said.group(1)) * 2**30
    assert DEFAULT_LIMIT_BYTES // (2 * 4) == 2 ** int(said.group(2))
    assert round(50_000 * 100 * 8 / 1e6) == int(said.group(3))
    assert round(1_280_000 * 1_000 * 8 / 1e9) == int(said.group(4))


def test_the_names_extending_says_a_proxy_cannot_take_are_reserved() -> None:
    from proxies.registry import RESERVED_NAMES

    said = re.search(r"none of the columns the per-sample tables hold beside the proxies' \((.*?)\.\.\.: the error "
                     r"lists them\)", _text("extending.md"))
    assert said, "extending.md no longer lists the column names a proxy cannot take"
    listed = re.findall(r"`([a-z_]+)`", said.group(1))
    assert len(listed) >= 8 and set(listed) <= RESERVED_NAMES


def test_the_tracker_examples_suggested_labels_are_the_pages(tmp_path: Path, monkeypatch) -> None:
    """own-training-loop.md: in its example, the 20 suspects are all flipped, and the suggested label
    and the final prediction each give 19 of them their true digit (10 epochs memorise none)."""
    said = re.search(r"In the example above, (\d+) of the (\d+) suspects \(all flipped\) get their true digit, and "
                     r"so does `predicted`", _text("own-training-loop.md"))
    assert said, "own-training-loop.md no longer says how many suspects get their true digit"
    text = (DOCS / "own-training-loop.md").read_text(encoding="utf-8")
    example = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "tracker.suspects(k=20)" in b)
    monkeypatch.chdir(tmp_path)  # the example writes suspects.png where it runs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as tests/test_docs.py runs the page's examples
    try:
        namespace: dict = {"print": lambda *a, **k: None}
        exec(compile(example, "own-training-loop.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    suspects, flipped, clean = namespace["suspects"], namespace["flipped"], namespace["digits"].target
    true = clean[suspects["index"].to_numpy()]
    assert len(suspects) == int(said.group(2)) == 20
    assert np.isin(suspects["index"], flipped).all()
    assert int((suspects["suggested"].to_numpy() == true).sum()) == int(said.group(1)) == 19
    assert int((suspects["predicted"].to_numpy() == true).sum()) == int(said.group(1))


def test_an_index_column_hides_a_copied_row_unless_it_lies_near_its_original(tmp_path: Path) -> None:
    """datasets.md: the wine data with one row repeated at its end under another label (179 rows):
    the copy is found; with the index column to_csv writes, only a copy a few rows away still is."""
    from sklearn.datasets import load_wine

    from harness.datasets import load_dataset
    from harness.near_duplicates import find_pairs

    said = re.search(r"a copy of row (\d+) was still found, of row (\d+) or (\d+) not", _text("datasets.md"))
    assert said, "datasets.md no longer says which copies the index column hides"
    found, *hidden = (int(g) for g in said.groups())
    wine = load_wine()

    def pairs(row: int, index: bool) -> list[list[int]]:
        x = np.vstack([wine.data, wine.data[row:row + 1]])
        y = np.append(wine.target, (wine.target[row] + 1) % 3)
        if index:
            x = np.hstack([np.arange(len(x))[:, None], x])
        path = tmp_path / f"wine{row}{index}.npz"
        np.savez(path, x=x, y=y)
        return find_pairs(load_dataset(f"npz:{path}").x_train)[["a", "b"]].values.tolist()

    for row in (found, *hidden):
        assert pairs(row, index=False) == [[row, 178]]
    assert pairs(found, index=True) == [[found, 178]]
    assert [pairs(row, index=True) for row in hidden] == [[], []]


def _seconds(minutes: str, seconds: str) -> int:
    return 60 * int(minutes) + int(seconds)


def test_the_suite_times_testing_md_sums_up_are_its_measurements() -> None:
    """testing.md's summary of its earlier measurements spans every idle run it lists, and the test
    counts it compares the newest runs with are the listed ones."""
    page = (DOCS / "testing.md").read_text(encoding="utf-8")
    earlier = " ".join(page[page.index("## Earlier measurements"):].split())
    span = re.search(r"On idle 2-core machines the suite took (\d+) min (\d+) s to (\d+) min (\d+) s as it grew from "
                     r"about ([\d,]+) to ([\d,]+) tests", earlier)
    assert span, "testing.md no longer sums up its earlier measurements"
    low, high = _seconds(*span.group(1, 2)), _seconds(*span.group(3, 4))
    bullets = [" ".join(b.split()) for b in re.split(r"\n- ", page[page.index("## Earlier measurements"):])[1:]]
    idle = [b for b in bullets if "idle" in b or "no other tests running" in b]
    runs = [(_seconds(m, s), int(n.replace(",", ""))) for b in idle
            for m, s, n in re.findall(r"(\d+) min (\d+) s for ([\d,]+)", b)]
    assert len(runs) >= 8
    assert all(low <= t <= high for t, _ in runs), f"idle runs outside {low}-{high} s: {runs}"
    assert max(n for _, n in runs) == int(span.group(6).replace(",", ""))
    newest = " ".join(page[:page.index("- **What it includes**")].split())
    counts = re.search(r"for ([\d,]+) tests .*? for ([\d,]+) at \w+ .*?: ([\d,]+) and ([\d,]+) more tests than "
                       r"at (\w+) \((\d+) min (\d+) s, below\)", newest)
    assert counts, "testing.md's run time no longer compares the newest runs with an earlier one"
    base = re.search(rf"(\d+) min (\d+) s for ([\d,]+) tests [^;]*? at {counts.group(5)}\b", earlier)
    assert base and base.group(1, 2) == counts.group(6, 7)
    was = int(base.group(3).replace(",", ""))
    assert [int(counts.group(i).replace(",", "")) - was for i in (1, 2)] == [int(counts.group(i).replace(",", ""))
                                                                             for i in (3, 4)]


def test_the_default_experiment_the_home_page_and_quickstart_describe_is_the_default() -> None:
    from harness.api import experiment_config
    from harness.corruption import default_duplicate_pairs
    from harness.presets import PRESETS
    from harness.tasks import TASKS

    cfg = experiment_config()
    rates = [f"{r * 100:g}" for r in cfg.noise_rates]
    quick = _text("quickstart.md")
    said = re.search(r"- the quick preset \(an MLP, (\d+) epochs\), (\d+) seeds; - every task: mislabeled at ([\d, ]+) "
                     r"and (\d+) % noise, duplicates, cost, memorization against K = (\d+) stability models, "
                     r"the theory figures and privacy\.", quick)
    assert said, "the quickstart no longer describes the first command's run"
    assert cfg.preset == "quick" and PRESETS["quick"].for_dataset("digits").model == "mlp"
    assert int(said.group(1)) == PRESETS["quick"].for_dataset("digits").recipe.epochs
    assert int(said.group(2)) == len(cfg.seeds)
    assert [*said.group(3).split(", "), said.group(4)] == rates
    assert int(said.group(5)) == TASKS.get("memorization").defaults["k"]
    assert list(cfg.tasks) == ["mislabeled", "duplicates", "cost", "memorization", "theory", "privacy"]
    home = _text("index.md")
    noise = re.search(r"`mislabeled` \(symmetric noise at ([\d, ]+) %", home)
    assert noise and noise.group(1).split(", ") == rates
    pairs = re.search(r"P = ([\d.]+) % of N\)", home)
    assert pairs and all(default_duplicate_pairs(n) == max(1, round(float(pairs.group(1)) / 100 * n))
                         for n in (100, 1_437, 50_000))
    assert default_duplicate_pairs(50_000) == 250  # the README's full CIFAR-10 duplicates run
    assert "250 duplicated pairs" in _text("README.md")


def _split_half_claims() -> dict[int, float]:
    said = re.search(r"agree with Pearson ([\d.]+) at K = (\d+) \(([\d.]+) at (\d+), ([\d.]+) at (\d+); digits, "
                     r"the mean over the default 3 seeds", _text("experiments.md"))
    assert said, "experiments.md no longer quotes the reference's split-half Pearson by K"
    values = said.groups()
    return {int(values[i + 1]): float(values[i]) for i in (0, 2, 4)}


def test_the_split_half_pearson_at_the_default_k_is_the_committed_runs() -> None:
    import pandas as pd

    board = pd.read_csv(ROOT / "results" / "digits-default" / "leaderboard.csv")
    row = board[board.metric == "reference_split_half_pearson"]
    assert len(row) == 1 and int(row.n_seeds.iloc[0]) == 3
    assert round(float(row["mean"].iloc[0]), 2) == _split_half_claims()[128]


@pytest.mark.slow
def test_the_split_half_pearson_at_smaller_k_is_what_the_page_quotes(tmp_path: Path) -> None:
    """K = 32 and 64 on digits, 3 seeds (minutes on 2 cores): the page said 0.88 and 0.91, figures from
    before the quick recipe's changes; today's are 0.86 and 0.94."""
    from harness import run_experiment

    claims = _split_half_claims()
    for k in sorted(k for k in claims if k != 128):
        result = run_experiment(proxies="csl", tasks="memorization", task_args={"memorization": {"k": k}},
                                executor="inprocess", store=tmp_path / "store", progress=False)
        board = result.leaderboard
        measured = float(board[board.metric == "reference_split_half_pearson"]["mean"].iloc[0])
        assert round(measured, 2) == claims[k], (k, measured)


def test_the_unfitted_regime_proxies_md_quotes_is_the_runs(tmp_path: Path) -> None:
    """400 digits at 12 epochs, 3 seeds: learning_time(rule=first) scores every sample alike in every
    setting (AUROC 0.5), and variability ranks the flipped labels the wrong way round at 5 % noise,
    where the runs fit a few of them (the page said 0.006, from an earlier code state; today 0.008)."""
    import json

    from harness import run_experiment

    page = _text("proxies.md")
    said = re.search(r"\(([\d.]+) on (\d+) digits at (\d+) epochs and (\d+) % noise, the mean of 3 seeds, when (\d+) % "
                     r"of the flipped labels were fitted\)", page)
    assert said, "proxies.md no longer quotes variability's AUROC where flipped labels are not fitted"
    assert "On 400 digits at 12 epochs that happened in every setting" in page
    n, epochs, rate = int(said.group(2)), int(said.group(3)), int(said.group(4)) / 100
    result = run_experiment(proxies="learning_time,variability,final_loss", tasks="mislabeled", subset=n,
                            epochs=epochs, executor="inprocess", store=tmp_path / "store", out=tmp_path / "out",
                            progress=False)
    auroc = result.leaderboard[result.leaderboard.metric == "auroc"].set_index(["proxy", "setting"])["mean"]
    assert (auroc["learning_time"] == 0.5).all() and len(auroc["learning_time"]) == 4
    assert round(float(auroc["variability", f"noise={rate:g}"]), 3) == float(said.group(1))
    runs = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    fitted = [r["flipped_fit"] for r in runs if r["label"].startswith(f"digits noise={rate:g} ")]
    assert len(fitted) == 3 and round(100 * float(np.mean(fitted))) == int(said.group(5))


def test_the_executor_options_and_the_gpu_chunk_share_the_pages_quote_are_the_codes() -> None:
    from harness.ensemble_stack import GPU_MEMORY_SHARE
    from harness.executors import BUILTIN, EXECUTOR_OPTIONS, executor_class

    said = re.search(r"`options` lists which executor-specific config fields it reads "
                     r"\(today ((?:`\w+`(?:, | and )?)+)", _text("executors.md"))
    assert said, "executors.md no longer lists the executor-specific config fields"
    listed = re.findall(r"`(\w+)`", said.group(1))
    read = {field for name in BUILTIN for field in executor_class(name).options}
    assert set(listed) == read == set(EXECUTOR_OPTIONS)
    share = re.search(r"as many members as fit in (\d+) % of the free GPU memory", _text("experiments.md"))
    assert share and int(share.group(1)) / 100 == GPU_MEMORY_SHARE
