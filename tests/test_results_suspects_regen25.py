"""results/cifar10-suspects-cpu/ holds what the suspects task wrote at f410fdc (resuspects28), and the numbers
its README, results/README.md and docs/results.md quote are its files'.

The folder was made again then so that its pair tables carry the shifted search (`shifted`) beside the
mirrored one and the class names, and its ranked CSV the suggested label. The ranked CSV's columns are
checked against the list docs/reading-results.md gives (itself checked against the code by
tests/test_docs23_claims.py), so a folder left behind by a new column fails here; the quoted figures are
recomputed from the files, so a folder made again whose numbers move cannot leave a stale figure in the prose.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "cifar10-suspects-cpu"
SUSPECTS = FOLDER / "suspects"


def _folded(path: Path) -> str:
    """A page with its line breaks folded, so a sentence matches wherever the page wraps it."""
    return " ".join(path.read_text(encoding="utf-8").split())


def _ticked(text: str) -> list[str]:
    """The column names a passage puts in backticks, in order, each once."""
    return list(dict.fromkeys(re.findall(r"`([a-z_]+)`", text)))


def _summary() -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((FOLDER / "summary.json").read_text(encoding="utf-8"))
    return summary


@pytest.fixture(scope="module")
def ranked() -> pd.DataFrame:
    """The ranked list, most suspicious first (`duplicates` as text: empty for most rows)."""
    return pd.read_csv(SUSPECTS / "suspects_seed0.csv.gz", dtype={"duplicates": str}, keep_default_na=False)


def test_the_ranked_csv_has_the_columns_the_task_writes_today(ranked: pd.DataFrame) -> None:
    row = next(line for line in (ROOT / "docs" / "reading-results.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `suspects/suspects_seed"))
    listed = _ticked(row.split("with the columns", 1)[1].split("then every proxy's score", 1)[0])
    listed = [c for c in listed if c != "text"]  # an image folder: `file`, no `text`
    proxies = [p["label"] for p in _summary()["proxies"]]
    assert list(ranked.columns) == listed + proxies
    assert {"suggested", "suggested_name", "p_suggested"} <= set(ranked.columns)
    assert (ranked.suggested != ranked.label).all()  # of the other classes
    assert ranked.p_suggested.between(0, 1).all() and ranked.p_label.between(0, 1).all()


def test_the_pair_tables_have_the_columns_the_task_writes_today() -> None:
    """The search's columns (plain, mirrored, shifted), then each label with its class name and the files."""
    from harness.near_duplicates import COLUMNS, TEST_COLUMNS

    pairs = pd.read_csv(SUSPECTS / "duplicates.csv")
    copies = pd.read_csv(SUSPECTS / "train_test_duplicates.csv")
    assert list(pairs.columns) == [*COLUMNS, "label_a", "label_a_name", "label_b", "label_b_name", "labels_differ",
                                   "file_a", "file_b"]
    assert list(copies.columns) == [*TEST_COLUMNS, "label_test", "label_test_name", "label_train",
                                    "label_train_name", "labels_differ", "file_test", "file_train"]
    assert "shifted" in COLUMNS and "shifted" in TEST_COLUMNS
    names = dict(zip(pairs.label_a, pairs.label_a_name))
    assert names == {k: v for k, v in dict(zip(pairs.label_b, pairs.label_b_name)).items() if k in names}
    assert [f.split("/")[1] for f in pairs.file_a] == pairs.label_a_name.tolist()  # train/<class>/<n>.jpg


def test_no_page_still_says_the_pair_tables_predate_the_shifted_search() -> None:
    """The notes that the stored tables lacked `shifted` went with the rerun that brought the column."""
    pages = [FOLDER / "README.md", ROOT / "results" / "README.md", ROOT / "docs" / "results.md"]
    for page in pages:
        text = _folded(page).lower()
        assert "predate the shifted search" not in text and "predates the shifted search" not in text, page


def test_the_ranked_csv_agrees_with_the_pair_table(ranked: pd.DataFrame) -> None:
    """Every image of a pair lists its partner in `duplicates`, and no other image lists one."""
    pairs = pd.read_csv(SUSPECTS / "duplicates.csv")
    partners: dict[int, set[int]] = {}
    for a, b in zip(pairs.a, pairs.b):
        partners.setdefault(int(a), set()).add(int(b))
        partners.setdefault(int(b), set()).add(int(a))
    listed = {int(i): {int(p) for p in d.split(";")} for i, d in zip(ranked["index"], ranked.duplicates) if d}
    assert listed == partners


def test_the_summary_is_the_readme_command() -> None:
    """The command the folder's README quotes gives the config its summary.json records, and every
    output the summary names is in the folder (the scores/ file left out, the ranked CSV gzipped)."""
    block = (FOLDER / "README.md").read_text(encoding="utf-8").split("```bash", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:4] == ["python", "-m", "harness", "run"]
    flags = dict(zip(words[4::2], words[5::2]))
    config = _summary()["config"]
    assert flags["--dataset"] == config["dataset"] and flags["--preset"] == config["preset"]
    assert int(flags["--subset"]) == config["subset"] and flags["--tasks"].split(",") == config["tasks"]
    assert flags["--proxies"] == config["proxies"] and config["seeds"] == list(range(int(flags["--seeds"])))
    assert flags["--executor"] == config["executor"] and int(flags["--threads"]) == config["threads"]
    assert flags["--out"] == config["out"] and flags.get("--store") == config["store"]
    outputs = _summary()["outputs"]
    for name in [*outputs["suspects"], *outputs["figures"], outputs["leaderboard"], outputs["raw"]]:
        assert (FOLDER / name).exists() or (FOLDER / f"{name}.gz").exists(), name


def _other(ranked: pd.DataFrame) -> pd.Series:
    return ranked.predicted != ranked.label


def test_the_readme_quotes_the_run_and_its_lists(ranked: pd.DataFrame) -> None:
    readme = _folded(FOLDER / "README.md")
    run = _summary()["runs"][0]
    assert f"Training accuracy {run['train_acc']:.3f} ({run['train_acc']:.5f}), held-out accuracy " \
           f"{run['test_acc']:.3f}" in readme
    assert f"another class than the given one for {int(_other(ranked).sum())} of the 50,000" in readme
    board = pd.read_csv(FOLDER / "leaderboard.csv").set_index("proxy")["mean"]
    assert (f"final_loss {board.final_loss:.2f}, aum {board.aum:.3f}, forgetting {board.forgetting:.3f} "
            f"(tied scores: the expected share under random tie-breaking), csl {board.csl:.2f}, "
            f"el2n {board.el2n:.2f}") in readme
    other = _other(ranked).to_numpy()
    assert f"the share is {other[:100].mean():.2f} in the top 100 and {other[:1000].mean():.3f} in" in readme
    rho = ranked[["csl", "aum", "el2n", "final_loss", "forgetting"]].corr("spearman")["csl"]
    assert (f"csl with aum {rho.aum:.2f}, el2n {rho.el2n:.2f}, final_loss {rho.final_loss:.2f}, "
            f"forgetting {rho.forgetting:.2f}") in readme


def test_the_readme_quotes_the_pair_tables(ranked: pd.DataFrame) -> None:
    readme = _folded(FOLDER / "README.md")
    pairs = pd.read_csv(SUSPECTS / "duplicates.csv")
    copies = pd.read_csv(SUSPECTS / "train_test_duplicates.csv")
    both, both_test = int((pairs.mirrored & pairs.shifted).sum()), int((copies.mirrored & copies.shifted).sum())
    assert (f"{len(pairs)} pairs, {int(pairs.mirrored.sum())} mirrored, {int(pairs.shifted.sum())} shifted, "
            f"{both} of them both") in readme
    assert (f"Training set: {len(pairs)} pairs, the former {int((~pairs.shifted).sum())} ") in readme
    assert f"and {int(pairs.shifted.sum())} found only shifted, {both} of them also mirrored" in readme
    tested = copies.test.nunique()
    assert (f"{len(copies)} pairs, {int(copies.mirrored.sum())} mirrored, {int(copies.shifted.sum())} shifted "
            f"({both_test} of them both), {tested} test images ({tested / 100:.2f} %)") in readme
    assert f"the former {int((~copies.shifted).sum())} (the same pairs and distances)" in readme
    paired = ranked["index"].isin(pd.concat([pairs.a, pairs.b]))
    first = int(ranked["rank"][paired].min())
    assert f"No image of the {int(paired.sum())} in a pair is among CSL's top 1,000" in readme
    assert f"(the first at rank {first:,})" in readme and first > 1000
    differ = pairs[pairs.labels_differ]
    assert len(differ) == 1 and not copies.labels_differ.any()  # one pair under another label, no test copy
    row = differ.iloc[0]
    assert (f"#{row.a} ({row.label_a_name}) and #{row.b} ({row.label_b_name}), d = {row.distance:.3f}") in readme
    assert bool(row.shifted) and "1 pair is under another label, and it is shifted" in readme


def test_the_readme_quotes_the_suggested_label(ranked: pd.DataFrame) -> None:
    readme = _folded(FOLDER / "README.md")
    top = ranked.head(40)
    moved = _other(top)
    agree = int((top.suggested[moved] == top.predicted[moved]).sum())
    everywhere = int(((ranked.suggested == ranked.predicted) & _other(ranked)).sum())
    assert (f"final model predicts another class for {int(moved.sum())}; for {agree} of those `suggested` is "
            f"that class too ({everywhere} of the {int(_other(ranked).sum())} such images") in readme
    truck = ranked.loc[ranked["index"] == 18310].iloc[0]
    assert truck["rank"] == 4 and "shows two people (fourth)" in readme
    assert f"two people: {truck.suggested_name}, {truck.p_suggested:.2f})" in readme
    assert (f"`p_suggested` averages {ranked.p_suggested.head(100).mean():.2f} over the top 100 and "
            f"{ranked.p_suggested.mean():.2f} over all 50,000") in readme


def test_results_md_and_the_results_index_quote_the_folder(ranked: pd.DataFrame) -> None:
    page = _folded(ROOT / "docs" / "results.md")
    index = _folded(ROOT / "results" / "README.md")
    run = _summary()["runs"][0]
    pairs = pd.read_csv(SUSPECTS / "duplicates.csv")
    copies = pd.read_csv(SUSPECTS / "train_test_duplicates.csv")
    accuracy = f"training accuracy {run['train_acc']:.3f}, test {run['test_acc']:.3f}"
    assert accuracy in page and accuracy in index
    assert "predate the suggested label" not in page and "_mirrored.csv" not in page
    tested = copies.test.nunique()
    assert f"{tested} of the 10,000 test images ({tested / 100:.2f} %) have a near copy" in page
    assert f"*the first 20 of the {len(pairs)} pairs, mirrored and shifted copies included" in page
    assert f"*the first 20 of the {len(copies)} test/training pairs, mirrored and shifted copies included" in page
    top = ranked.head(40)
    moved = _other(top)
    agree = int((top.suggested[moved] == top.predicted[moved]).sum())
    assert f"of the {int(moved.sum())} images in the top 40 that the final model assigns to another class, " \
           f"{agree} have that class as their suggestion too" in page
    assert (f"the {len(pairs)} near-duplicate pairs among the training images, mirrored and shifted copies included "
            f"(`suspects/duplicates.csv`: {int(pairs.mirrored.sum())} mirrored, {int(pairs.shifted.sum())} shifted, "
            f"{int(pairs.labels_differ.sum())} under another label)") in index
    assert f"the {tested} test images with a near copy in training" in index
