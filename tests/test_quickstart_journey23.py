"""docs/quickstart.md's commands as a data-quality engineer reads them (journey23): the list of
commands named image folders only, so a table's owner tried `--dataset mine.csv`. Its new line ranks
an `npz:` table and its note says a CSV is converted first, linking the page that shows how; every
command of the list must parse, and what the note says of a CSV must be what memprox does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from harness.cli_parser import build_parser
from harness.datasets import load_dataset
from harness.errors import HarnessError

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _commands() -> list[str]:
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    block = text.split("## The commands you will use", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("python -m harness")]


def test_every_listed_command_parses_and_one_ranks_a_table() -> None:
    commands = _commands()
    assert any("--dataset npz:" in c and "--tasks suspects" in c for c in commands), commands
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)[3:]
        if argv[-1:] == ["--help"]:
            continue
        parser.parse_args(argv)


def test_the_csv_note_is_what_npz_does(tmp_path: Path) -> None:
    note = " ".join((DOCS / "quickstart.md").read_text(encoding="utf-8").split("\\*\\* `npz:`", 1)[1]
                    .split("\n\n", 1)[0].split())
    assert "(`--dataset npz:mine.csv` is refused, naming the page)" in note
    link = re.search(r"\[Datasets\]\(datasets\.md#([a-z-]+)\) converts a CSV", note)
    assert link and f"\n### {link.group(1).capitalize()}\n" in (DOCS / "datasets.md").read_text(encoding="utf-8")
    (tmp_path / "mine.csv").write_text("a,b,label\n1,2,x\n3,4,y\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="as docs/datasets.md shows for a CSV file"):
        load_dataset(f"npz:{tmp_path / 'mine.csv'}")
