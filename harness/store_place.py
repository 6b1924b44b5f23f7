"""Where a new run store may go: `--store ~` or `--store .` in a project was accepted, and the
store then put its runs/, partial/ and locks/ among the user's files. Checked before training."""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError


def check_place(root: Path) -> None:
    """HarnessError when `root` is no place for a new store (`_is_home`, `_foreign_entries`); an
    existing store (runs/) stays usable wherever it is."""
    if (root / "runs").is_dir():
        return
    if _is_home(root):  # it holds the user's files, hidden ones too
        raise HarnessError(f"--store {root} is the home folder: the store would add runs/, partial/ and locks/ to it; "
                           "pass a folder of its own (the default is $MEMPROX_CACHE/store or ~/.cache/memprox/store)")
    others = _foreign_entries(root)
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise HarnessError(f"--store {root} is a folder of other files ({shown}), not a run store: the store would add "
                           "runs/, partial/ and locks/ among them; pass a new or empty folder, or an existing store")


def _is_home(root: Path) -> bool:
    try:
        return root.resolve() == Path.home().resolve()
    except RuntimeError:  # no home folder at all
        return False


def _foreign_entries(root: Path) -> list[str]:
    """What a folder that is no store yet holds besides a store's own folders:
    `--store ~` or `--store .` in a project would have scattered runs/, partial/ and locks/ among
    the user's files. Hidden entries (.DS_Store, write probes) do not count."""
    if not root.is_dir():
        return []
    return sorted(e.name for e in os.scandir(root) if e.name not in ("partial", "locks") and not e.name.startswith("."))
