"""What kills leave in a run store, found by name and contents: entry folders being written or set aside by a swap
(`.tmp-<hash>-...`, `.old-<hash>-...`), temporary checkpoints, and checkpoints of runs their entry already holds.
Listing them is its own job, shared by `RunStore.clean` (which removes each under its entry's lock, so no live
writer loses a file) and `memprox store info`/`prune` (`harness.store_scan`, `harness.store_admin`); a file or
folder merely named so, a link, or a user's file is never listed. `harness.store` re-exports these names.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.checkpoints import read_checkpoint
from harness.io import leftovers
from harness.store_entry_files import own_entry_folder, read_manifest, verify_entry

_DIGEST = "[0-9a-f]{20}"  # RunSpec.digest()
LEFTOVER = re.compile(rf"^\.(?:tmp|old)-({_DIGEST})-")
_ASIDE = re.compile(rf"\.old-({_DIGEST})-\d+$")  # `put` sets an entry aside under this name
CKPT_TEMP = re.compile(rf"^(?:\.({_DIGEST})\.pt\..+|({_DIGEST})\.tmp\d+)$")


def store_leftovers(root: Path) -> list[tuple[str, Path]]:
    """(entry digest, path) of what kills may have left in the store at `root`, by name and
    contents (not yet by lock): entry folders set aside mid-swap (first) and temp entry folders,
    temp checkpoints, checkpoints of runs already complete."""
    found = leftovers(root / "runs", LEFTOVER, lambda m, p: own_entry_folder(p))
    candidates = [(m.group(1), p) for m, p in sorted(found, key=lambda mp: not mp[1].name.startswith(".old-"))]
    partial = root / "partial"  # a link to elsewhere (a home folder) is not the store's: never cleaned
    for p in [] if partial.is_symlink() or not partial.is_dir() else partial.iterdir():  # none: prune makes none
        if not _plain_file(p):
            continue
        m = CKPT_TEMP.match(p.name)
        if m:
            candidates.append((m.group(1) or m.group(2), p))
        elif re.fullmatch(rf"{_DIGEST}\.pt", p.name) and _superseded(root, p.stem, p):
            candidates.append((p.stem, p))
    return candidates


def _swaps_left(root: Path) -> list[tuple[str, Path]]:
    """`store_leftovers`, and the entries set aside by a put (`.old-<hash>-PID`, its manifest checking out) that hold
    a user's files: a kill between the swap's renames left them there for good (the old entry not put back, so a rerun
    trained it again; the user's files hidden in it). A folder merely named so is not listed."""
    found = store_leftovers(root)
    listed = {path for _, path in found}
    return found + [(m.group(1), p) for m, p in leftovers(root / "runs", _ASIDE,
                                                           lambda m, p: p not in listed and _entry_of(p, m.group(1)))]


def _entry_of(path: Path, digest: str) -> bool:
    try:
        read_manifest(path, digest)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _superseded(root: Path, digest: str, checkpoint: Path) -> bool:
    """Whether the checkpoint is of a run its entry already holds: the entry verifies and records every signal the
    checkpoint does (a kill between storing and removing it). A run being recomputed (its entry damaged) or recorded
    again with more signals resumes from it: removing it (as before, for any entry with a manifest) restarted that
    run at its first epoch after a Ctrl-C that had promised a resume."""
    try:
        recorded = set(verify_entry(root / "runs" / digest, digest).recorders)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        keys = read_checkpoint(checkpoint, digest)["recorder_keys"]
    except Exception:  # torn, damaged or foreign: no run resumes from it (`load_checkpoint`)
        return True
    return set(keys) <= recorded


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
