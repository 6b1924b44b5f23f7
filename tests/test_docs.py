"""The documentation shows what works: its Python examples run, its links resolve, the README opens
with the two commands (the second is CI's test command, verbatim), and the site builds with
`mkdocs build --strict`.

Convention: every ```python block in docs/**/*.md and README.md runs as written, in a fresh
subprocess in a temporary folder with its own MEMPROX_CACHE (so its own run store), unless the line
right before its fence is `<!-- no-test: REASON -->` (a sketch that needs Dask or a cluster, hours of
training). Shell blocks are not executed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
NO_TEST = re.compile(r"<!--\s*no-test:\s*\S.*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
TRACKER_MARKER = "<!-- tracker-example -->"
#: Seconds one example may take (they train a few epochs on digits; generous for a loaded CI box).
EXAMPLE_TIMEOUT_S = 300


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def python_blocks() -> list[tuple[str, str, str]]:
    """(id, source, the line before the fence) of every ```python block, skipped ones included."""
    blocks = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group("lang") != "python":
                continue
            line = text.count("\n", 0, m.start()) + 1
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            blocks.append((f"{path.relative_to(ROOT)}:{line}", m.group("body"), before))
    return blocks


BLOCKS = python_blocks()


def _strip_code(text: str) -> str:
    """Markdown without fenced blocks and inline code: links there are examples, not links."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(text: str) -> list[str]:
    text = _strip_code(text)
    inline = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    reference = re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, re.M)
    return inline + reference


def _run_example(source: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """One thread for the native libraries, as conftest pins this process's torch and as
    test_examples.py runs the examples/ scripts: an example's own torch loop (the tracker's) took
    twice the CPU time on 2 cores with torch's default pool spinning."""
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    env = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=EXAMPLE_TIMEOUT_S)


# -- the examples ----------------------------------------------------------------------------


def test_examples_are_found_and_skips_give_a_reason() -> None:
    assert len(BLOCKS) >= 5, "the docs lost their examples (or the fence pattern broke)"
    for name, _, before in BLOCKS:
        if "no-test" in before:
            assert NO_TEST.match(before.strip()), f"{name}: write the marker as <!-- no-test: REASON -->"


@pytest.mark.parametrize(("source", "before"), [pytest.param(s, b, id=n) for n, s, b in BLOCKS])
def test_python_example_runs(source: str, before: str, tmp_path: Path) -> None:
    if NO_TEST.match(before.strip()):
        pytest.skip(before.strip())
    tracker = before.strip() == TRACKER_MARKER
    done = _run_example(source + (TRACKER_TAIL if tracker else ""), tmp_path)
    output = f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"example failed (exit {done.returncode}):\n{output}"
    _check_stated_output(source, done.stdout)
    if tracker:  # the tracker example must also find what it promises
        assert (tmp_path / "suspects.png").read_bytes()[:4] == b"\x89PNG"
        found = re.search(r"flipped labels among the 20 suspects: (\d+)%", done.stdout)
        assert found, done.stdout[-2000:]
        assert int(found.group(1)) >= 80, done.stdout[-2000:]
        _check_tracker_scores(tmp_path)


#: Appended to the tracker example once it has run as written: what it computed, for the checks below.
TRACKER_TAIL = """
np.save("flipped.npy", flipped)
scores.to_csv("scores.csv", index=False)
suspects.to_csv("suspects.csv", index=False)
"""


def _check_tracker_scores(folder: Path) -> None:
    """The tracker example's scores find the flipped labels (CSL's AUROC), beyond its own printout."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    flipped = np.load(folder / "flipped.npy")
    scores, suspects = pd.read_csv(folder / "scores.csv"), pd.read_csv(folder / "suspects.csv")
    assert roc_auc_score(np.isin(scores["index"], flipped), scores["csl"]) >= 0.95
    assert np.isin(suspects["index"], flipped).mean() >= 0.8
    assert {"csl", "forgetting", "aum", "final_loss", "in_confidence"} <= set(scores.columns)


def _check_stated_output(source: str, stdout: str) -> None:
    """An example whose comment says what it prints must print that (checked on the run above, not
    on a second one). datasets.md's CSV example said "classes ['benign', 'malignant']" where
    `list(classes)` of a NumPy 2 str array prints [np.str_('benign'), np.str_('malignant')]."""
    stated = re.search(r"# (\d+) samples, classes (\[.*\])", source)
    if stated and "load_breast_cancer" in source:
        assert f"train=({stated.group(1)}, " in stdout, stdout
        assert stdout.rstrip().endswith(stated.group(2)), stdout


def test_an_example_states_what_it_prints() -> None:
    """The CSV example is the one `_check_stated_output` holds to its comment: it must stay found."""
    assert sum(bool(re.search(r"# \d+ samples, classes \[", s)) and "load_breast_cancer" in s
               for _, s, b in BLOCKS if not NO_TEST.match(b.strip())) == 1


def test_the_tracker_example_is_marked() -> None:
    assert any(before.strip() == TRACKER_MARKER for _, _, before in BLOCKS), (
        f"the SampleTracker example lost its {TRACKER_MARKER} line (docs/own-training-loop.md)")


# -- the README ------------------------------------------------------------------------------


def _readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split("\n", 1)[1].lstrip("\n")  # after the title
    commands = []
    while body.startswith("```bash\n"):
        block, _, body = body[len("```bash\n"):].partition("```\n")
        commands.append(block.strip())
        body = body.lstrip("\n")
    return commands


def test_readme_is_short_and_opens_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move content into docs/ (at most 200)"
    assert lines[0].startswith("# ")
    commands = _readme_commands()
    assert len(commands) == 2, f"README.md must open with two ```bash blocks right after its title, got {commands}"
    run, test = commands
    assert run.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . ")
    assert run.endswith("python -m harness run --proxies all")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert ci == [test], f"README's test command {test!r} is not .ci/run's {ci!r}"


# -- links and figures -----------------------------------------------------------------------


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s), mailto, ... and anchors within the page
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_gallery_shows_every_committed_figure() -> None:
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(ROOT)) for p in _hooks().figures()  # a user's results/latest is not committed
               if f"../{p.relative_to(ROOT).as_posix()})" not in text]
    assert not missing, f"figures not in docs/results.md's gallery: {missing}"


# -- the site --------------------------------------------------------------------------------


def _hooks():
    spec = importlib.util.spec_from_file_location("memprox_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_proxy_table_lists_every_proxy_with_its_citation() -> None:
    from proxies.registry import PROXIES

    table = _hooks().render_markers("<!-- registry:proxies -->\n")
    builtins = {n: c for n, c in PROXIES.items() if c.__module__.startswith("proxies.")}
    assert len(builtins) >= 15
    for name, cls in builtins.items():
        row = next((r for r in table.splitlines() if r.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} missing from the generated table"
        assert cls.citation.replace("|", "\\|") in row
    assert "<!-- registry:proxies -->" in (DOCS / "proxies.md").read_text()


def test_every_registry_marker_renders() -> None:
    hooks = _hooks()
    for path in DOCS.rglob("*.md"):
        rendered = hooks.render_markers(path.read_text(encoding="utf-8"), str(path))
        assert "<!-- registry:" not in rendered, path


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert (tmp_path / "site" / "proxies" / "index.html").exists()
    assert (tmp_path / "site" / "gallery" / "digits-default" / "figures" / "csl_extremes_seed0.png").exists()
