"""Doc claims that drift silently when code moves: the module layout in docs/how-it-works.md, which
options docs/experiments.md says keep or change an experiment's identity for `--out`, and the lines
docs/store.md says `store info` prints. Each reads the page and checks it against the code, so a
renamed module, a new runtime option or a reworded info line fails here instead of misleading a reader."""

from __future__ import annotations

import re
from pathlib import Path

from harness import options
from harness.cli import main
from harness.executors.ray_probe import PREFIX, probe_path
from harness.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Modules split out of others (cli, store_admin, ensemble, executors/ray): the layout must name them.
SPLIT_MODULES = {"cli_parser.py", "cli_report.py", "store_scan.py", "store_reach.py", "ensemble_plan.py",
                 "ray_wait.py", "ray_probe.py"}
#: Runtime options that say where outputs and runs go, not how runs train: the growing section lists the rest.
WHERE_OPTIONS = {"out", "store", "progress", "overwrite", "download"}


def _layout() -> str:
    text = (DOCS / "how-it-works.md").read_text()
    return text[text.index("```\nproxies/"):text.index("```\n\n- A `RunSpec`")]


def _section(page: str, heading: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _fields(flags: list[str]) -> set[str]:
    by_flag = {o.flag: o.name for o in options.OPTIONS if o.flag}
    unknown = [f for f in flags if f not in by_flag]
    assert not unknown, f"docs name flags the CLI lacks: {unknown}"
    return {by_flag[f] for f in flags}


def test_the_layout_names_only_modules_that_exist_and_every_split_one() -> None:
    named = set(re.findall(r"\b([a-z_]+\.py)\b", _layout()))
    places = [ROOT / "harness", ROOT / "harness" / "executors", ROOT / "proxies", ROOT / "tests"]
    missing = sorted(n for n in named if not any((p / n).is_file() for p in places))
    assert not missing, f"docs/how-it-works.md's layout names modules that do not exist: {missing}"
    assert SPLIT_MODULES <= named, f"the layout does not name {sorted(SPLIT_MODULES - named)}"


def test_growing_names_the_runtime_options_and_what_changes_the_experiment() -> None:
    growing = " ".join(_section("experiments.md", "## Growing an experiment").split())
    listed = re.search(r"The runtime options \(([^)]*)\) are not part of the address", growing)
    assert listed, "the growing section no longer lists the runtime options"
    runtime = _fields(re.findall(r"`(--[a-z-]+)`", listed.group(1)))
    assert runtime == set(options.runtime_fields()) - WHERE_OPTIONS
    other = re.search(r"another experiment for `--out` \(the runtime options above are not; ([^)]*)\)", growing)
    assert other, "the growing section no longer says which options make another experiment"
    changes = _fields(re.findall(r"`(--[a-z-]+)`", other.group(1)))
    assert changes == {"threads", "compile"}
    assert not changes & set(options.runtime_fields())  # in the identity: refused on another experiment's --out


def test_store_info_prints_the_probe_line_the_page_names(tmp_path: Path, capsys) -> None:
    page = " ".join((DOCS / "store.md").read_text().split())
    assert f"`partial/{PREFIX}<token>`" in page
    assert "`Ray run probes` counts" in page
    RunStore(tmp_path)
    probe_path(tmp_path, "0" * 32).write_text("not a live run's\n")
    assert main(["store", "info", "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("Ray run probes: 1 ") for line in lines)


def test_store_info_lines_the_page_lists_are_the_ones_it_prints() -> None:
    page = " ".join(_section("store.md", "## `store info`").split())
    source = (ROOT / "harness" / "store_report.py").read_text()
    for status in ("damaged", "unreadable", "foreign"):  # printed as f"{status} entries: ..."
        assert f"`{status} entries`" in page
        assert f'("{status}",' in source
    for reach in ("unreachable", "unknown"):
        assert f"`of which {reach}`" in page
        assert f'("{reach}",' in source
    for line in ("entries holding files that are not the store's own", "in use by a running experiment or prune",
                 "Ray run probes"):
        assert f"`{line}`" in page and line in source
