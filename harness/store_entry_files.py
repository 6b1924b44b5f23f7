"""Which files of a run-store entry folder are the store's own: its manifest.json and the arrays that
manifest names. `store prune` removes an entry only when it holds nothing else (`own_files`), and a
run that rewrites an entry (new recorders, a damaged entry recomputed) carries anything else, a
user's notes say, into the new entry (`foreign_names`) instead of deleting it with the old one."""

from __future__ import annotations

import os
from pathlib import Path

from harness.manifest import Manifest


def own_files(path: Path, manifest: Manifest | None) -> tuple[str, ...] | None:
    """The names of the files in the entry folder `path` when each is one the store writes there:
    plain files, a manifest.json (the store never leaves an entry without one) and only the arrays
    that manifest names (when it does not parse: only `.npy` files). None when anything else is there
    (a user's file, even a `.npy`, a folder, a link) or it cannot be listed: never removed."""
    try:
        found = list(os.scandir(path))
    except OSError:
        return None
    names = {e.name for e in found}
    if "manifest.json" not in names or not all(e.is_file(follow_symlinks=False) for e in found):
        return None
    arrays = names - {"manifest.json"}
    named = _array_files(manifest)
    ok = arrays <= named if named is not None else all(n.endswith(".npy") for n in arrays)
    return tuple(sorted(names)) if ok else None


def _array_files(manifest: Manifest | None) -> set[str] | None:
    """The array files a manifest names (recorders and checksums); None when it names none readably."""
    if manifest is None:
        return None
    try:
        named = {f"{key}.{name}.npy" for key, rec in manifest.recorders.items() for name in rec.arrays}
        return named | {str(k) for k in manifest.checksums}
    except (AttributeError, TypeError):  # a manifest parsed leniently, with odd fields
        return None


def foreign_names(path: Path) -> list[str]:
    """The names in the entry folder `path` the store did not write there (none when it is absent):
    anything but its manifest.json and the arrays its manifest names (when the manifest does not
    parse: anything but `.npy` files), and anything not a plain file."""
    try:
        found = list(os.scandir(path))
    except OSError:
        return []
    try:
        manifest: Manifest | None = Manifest.from_json((path / "manifest.json").read_bytes())
    except Exception:  # unreadable in any way: only `.npy` files count as the store's
        manifest = None
    named = _array_files(manifest)
    return sorted(e.name for e in found if e.name != "manifest.json" and (
        not e.is_file(follow_symlinks=False) or (e.name not in named if named is not None
                                                 else not e.name.endswith(".npy"))))
