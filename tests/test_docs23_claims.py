"""Claims of today's pages that drift silently when the code moves (docs23): the suspects task's
columns as docs/reading-results.md and docs/tasks-and-metrics.md list them (the suggested label, the
pair tables' `mirrored` and class-name columns, `suspects.csv`'s seed columns), the near search's
cap, the `suspects.X=Y` values the pages quote, the quoted `check_number` refusal, the resuming line
and the late-signal rule. Each reads the page and checks it against what the code writes or says,
so a renamed column, a moved cap or a reworded line fails here instead of misleading a reader."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The images the small run plants as copies: (a, b, b is a's mirror)
PLANTED = [(0, 50, False), (1, 51, True)]
#: The test image planted as the mirror of a training image: (test, train)
PLANTED_TEST = (0, 2)


def _text(name: str) -> str:
    """A page with its lines folded into one, so a list may wrap anywhere."""
    return " ".join((DOCS / name).read_text(encoding="utf-8").split())


def _ticked(text: str) -> list[str]:
    """The column names a passage puts in backticks, in order, each once (options like
    `suspects.duplicates=off` and file patterns left out)."""
    return list(dict.fromkeys(re.findall(r"`([a-z_]+)`", text)))


def _row(page: str, start: str) -> str:
    return next(line for line in (DOCS / page).read_text(encoding="utf-8").splitlines() if line.startswith(start))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str] | pd.DataFrame]:
    """Two seeds of the suspects task on small 3 x 8 x 8 images with a test split, a copy and a
    mirrored copy planted in training and a mirrored one in the test split: every suspects CSV."""
    from harness import run_experiment

    tmp = tmp_path_factory.mktemp("docs23")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 3, 8, 8), dtype=np.uint8)
    x_test = rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8)
    for a, b, mirrored in PLANTED:
        x[b] = x[a][..., ::-1] if mirrored else x[a]
    x_test[PLANTED_TEST[0]] = x[PLANTED_TEST[1]][..., ::-1]
    y, y_test = np.arange(120) % 3, np.arange(30) % 3
    np.savez(tmp / "small.npz", x=x, y=y, x_test=x_test, y_test=y_test, classes=np.array(["ant", "bee", "cat"]))
    with pytest.warns(UserWarning, match="1 of the 30 test samples copy a training sample"):  # as the page says
        run_experiment(dataset=f"npz:{tmp / 'small.npz'}", model="mlp", proxies="csl", tasks="suspects", seeds=2,
                       epochs=1, executor="inprocess", store=tmp / "store", out=tmp / "out", progress=False)
    folder = tmp / "out" / "suspects"
    return {name: pd.read_csv(folder / f"{name}.csv")
            for name in ("suspects_seed0", "suspects", "duplicates", "train_test_duplicates")}


def test_the_suspects_columns_the_pages_list_are_the_ones_written_in_order(written) -> None:
    row = _row("reading-results.md", "| `suspects/suspects_seed")
    listed = _ticked(row.split("with the columns", 1)[1].split("then every proxy's score", 1)[0])
    per_seed = [c for c in written["suspects_seed0"].columns if c != "csl"]
    assert [c for c in listed if c not in ("file", "text", "duplicate_files")] == per_seed  # npz: no files, no text
    section = _text("reading-results.md").split("### The suspects CSVs", 1)[1].split("`suspects.csv` (2+", 1)[0]
    assert [c for c in _ticked(section) if c not in ("file", "text", "duplicate_files")] == per_seed
    seeds = re.search(r"`suspects\.csv` has `(\w+)` and `(\w+)` in place of `(\w+)` and `(\w+)`", row)
    assert seeds, "the row no longer says what suspects.csv has in place of the prediction"
    at = per_seed.index(seeds.group(3))
    assert per_seed[at + 1] == seeds.group(4)
    combined = [*per_seed[:at], seeds.group(1), seeds.group(2), *per_seed[at + 2:]]
    assert [c for c in written["suspects"].columns if c != "csl"] == combined
    assert (written["suspects"]["n_seeds"] == 2).all()


def test_the_pair_tables_columns_the_pages_list_are_the_ones_written(written) -> None:
    pairs, copies = list(written["duplicates"].columns), list(written["train_test_duplicates"].columns)
    tasks = _text("tasks-and-metrics.md")
    said = re.search(r"`suspects/duplicates\.csv`: one row per pair \(a, b, distance, (.*?)\)\. Pairs", tasks)
    assert said, "tasks-and-metrics.md no longer lists duplicates.csv's columns"
    assert pairs[:3] == ["a", "b", "distance"] and _ticked(said.group(1)) == pairs[3:]  # npz: no files
    said = re.search(r"`suspects/train_test_duplicates\.csv`: one row per pair \(test, train, distance, "
                     r"([^;]*);", tasks)
    assert said, "tasks-and-metrics.md no longer lists train_test_duplicates.csv's columns"
    assert copies[:3] == ["test", "train", "distance"] and _ticked(said.group(1)) == copies[3:]
    for start, columns in (("| `suspects/duplicates", pairs), ("| `suspects/train_test", copies)):
        named = [c for c in _ticked(_row("reading-results.md", start)) if not c.startswith(("file", "text"))]
        assert named and named == [c for c in columns if c in named], (start, named, columns)
    found = {(int(r.a), int(r.b)): bool(r.mirrored) for r in written["duplicates"].itertuples()}
    assert found == {(a, b): mirrored for a, b, mirrored in PLANTED}
    test, train = PLANTED_TEST
    assert written["train_test_duplicates"][["test", "train", "mirrored"]].values.tolist() == [[test, train, True]]
    assert written["duplicates"]["label_a_name"].tolist() == ["ant", "bee"]


def test_the_near_search_cap_is_the_pages(recwarn, monkeypatch) -> None:
    """tasks-and-metrics.md: work over 16 x the plain CIFAR-10 search is refused before training,
    for images (searched twice) 8 x CIFAR-10's training set; a table is searched once. The memory
    check is left out (the largest case needs ~6 GiB, which a CI machine need not have free)."""
    import harness.tasks.suspects as suspects
    from harness.tasks import make_tasks

    monkeypatch.setattr(suspects, "available_bytes", lambda: None)
    from harness.tasks.suspects import MAX_NEAR_WORK

    text = _text("tasks-and-metrics.md")
    cap = re.search(r"Work over (\d+) times that search .* For images, searched twice, that is (\d+) times "
                    r"CIFAR-10's training set", text)
    assert cap, "tasks-and-metrics.md no longer states the near search's cap"
    plain = 50_000**2 * 3_072
    assert MAX_NEAR_WORK == int(cap.group(1)) * plain and int(cap.group(2)) * 2 == int(cap.group(1))
    (task,) = make_tasks(["suspects"])
    cfg = SimpleNamespace(seeds=(0,))

    def settings(n: int, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        x = torch.zeros((1, *shape), dtype=dtype).expand(n, *shape)  # no memory: only the sizes are read
        task.settings(cfg, None, SimpleNamespace(x_train=x, x_test=x[:0]))

    below, above = int((int(cap.group(2)) * 50_000**2) ** 0.5) - 10, int((int(cap.group(2)) * 50_000**2) ** 0.5) + 10
    settings(below, (3, 8, 128), torch.uint8)  # 8 pixels high: mirrored, not shifted (under 16 a side)
    with pytest.raises(HarnessError, match="near-duplicate search"):
        settings(above, (3, 8, 128), torch.uint8)
    settings(above, (3_072, 1, 1), torch.float32)  # a table of as many values: no mirrors, searched once
    shifted = re.search(r"so 32 × 32 colour images are refused from about ([\d,]+) \(([\d.]+) times", text)
    assert shifted, "tasks-and-metrics.md no longer states where the shifted search's work moves the cap"
    start = int(shifted.group(1).replace(",", ""))
    settings(start - 400, (3, 32, 32), torch.uint8)
    with pytest.raises(HarnessError, match="near-duplicate search"):
        settings(start + 400, (3, 32, 32), torch.uint8)
    assert round(start**2 / 50_000**2, 1) == float(shifted.group(2))


def test_every_suspects_value_the_pages_quote_is_accepted() -> None:
    from harness.tasks import make_tasks
    from harness.tasks.suspects import Suspects

    keys = "|".join(Suspects.defaults)
    quoted = {(m.group(1), m.group(2)) for page in ("reading-results.md", "tasks-and-metrics.md", "results.md")
              for m in re.finditer(rf"`(?:--task-arg )?(?:suspects\.)?({keys})=([\w.]+)`", _text(page))}
    assert {("suggest", "off"), ("duplicates", "off"), ("duplicates", "exact")} <= quoted
    for key, value in sorted(quoted):
        make_tasks(["suspects"], {"suspects": {key: value}})  # an unknown name or value raises


def test_the_check_number_refusal_extending_quotes_is_the_codes() -> None:
    from proxies.base import Proxy

    said = re.search(r"`(loss_slope\.start must be [^`]*)`", _text("extending.md"))
    assert said, "extending.md no longer quotes check_number's refusal"
    fake = SimpleNamespace(name="loss_slope", params={"start": 0.0})
    with pytest.raises(HarnessError) as refused:
        Proxy.check_number(fake, "start", 0.0, 1.0)
    assert str(refused.value) == said.group(1)
    assert Proxy.check_number(fake, "start", 0.0, 1.0, low_open=False) == 0.0  # "[0, 1]" as the page says


def test_the_resuming_lines_the_pages_quote_are_the_codes() -> None:
    from harness.jobs import resume_line

    quoted = [(page, m.group(0)) for page in ("cluster.md", "reliability.md")
              for m in re.finditer(r"resuming [^`]* from its checkpoint at epoch \d+ of \d+", _text(page))]
    assert len(quoted) >= 2, quoted
    spec = SimpleNamespace(label=lambda: "LABEL", recipe=SimpleNamespace(epochs=9), then_on=None)
    template = re.escape(resume_line(spec, 7)).replace("LABEL", r"\w+ [\w.=]+ \w+ seed\d+")
    template = template.replace("7", r"\d+").replace("9", r"\d+")
    assert all(re.fullmatch(template, line) for _, line in quoted), quoted


def test_the_late_signal_rule_reads_the_same_in_the_page_and_the_cli() -> None:
    """Both say a finished run's handling holds until the command returns, then the signals are
    ignored while Python exits, with no line (reliability.md once said 'its last line')."""
    import harness.cli

    cli = " ".join((harness.cli.__doc__ or "").split())
    assert "That holds until `harness.console.main` returns; while Python then exits" in cli
    assert "they are ignored, no line" in cli
    page = _text("reliability.md")
    assert "That holds until the command returns. Then memprox ignores these signals" in page
    assert "with these signals ignored: the exit code stays the run's, and no line is printed" in page
    assert "printed its last line" not in page and "the command's last line" not in page


def test_the_readme_and_home_page_name_what_the_suspects_task_gives() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    bullet = readme.split("`--tasks suspects` ranks every sample", 1)[1].split("- **", 1)[0]
    home = _text("index.md").split("`suspects` ranks every sample", 1)[1].split("- **", 1)[0]
    for text in (bullet, home):
        assert "suggested" in text and "mirrored" in text and "near copies" in text, text

