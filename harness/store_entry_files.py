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
    found = _listing(path)
    if found is None or "manifest.json" not in {e.name for e in found} or _foreign(found, manifest):
        return None
    return tuple(sorted(e.name for e in found))


def own_entry_folder(path: Path) -> bool:
    """A folder only the store could have left (a temporary or swapped-out entry, maybe without its
    manifest yet): readable, holding nothing `foreign_names` would name."""
    found = _listing(path)
    return found is not None and not _foreign(found, _read_manifest(path))


def foreign_names(path: Path) -> list[str]:
    """The names in the entry folder `path` the store did not write there (none when it is absent):
    anything but its manifest.json and the arrays its manifest names (when the manifest does not
    parse: anything but `.npy` files), and anything not a plain file."""
    found = _listing(path)
    return [] if found is None else _foreign(found, _read_manifest(path))


def _listing(path: Path) -> list[os.DirEntry[str]] | None:
    try:
        return list(os.scandir(path))
    except OSError:
        return None


def _read_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest.from_json((path / "manifest.json").read_bytes())
    except Exception:  # unreadable in any way: only `.npy` files count as the store's
        return None


def _foreign(found: list[os.DirEntry[str]], manifest: Manifest | None) -> list[str]:
    named = _array_files(manifest)
    return sorted(e.name for e in found if not e.is_file(follow_symlinks=False) or (e.name != "manifest.json" and (
        e.name not in named if named is not None else not e.name.endswith(".npy"))))


def _array_files(manifest: Manifest | None) -> set[str] | None:
    """The array files a manifest names (recorders and checksums); None when it names none readably."""
    if manifest is None:
        return None
    try:
        named = {f"{key}.{name}.npy" for key, rec in manifest.recorders.items() for name in rec.arrays}
        return named | {str(k) for k in manifest.checksums}
    except (AttributeError, TypeError):  # a manifest parsed leniently, with odd fields
        return None
