"""Which files of a run-store entry folder are the store's own: its manifest.json and the arrays that
manifest names. `store prune` removes an entry only when it holds nothing else (`own_files`), and a
run that rewrites an entry (new recorders, a damaged entry recomputed) carries anything else, a
user's notes say, into the new entry (`foreign_names`) instead of deleting it with the old one.
Writing an entry's arrays (`_write_arrays`) and carrying a user's files across (`_move_users_files`) are
here as well. Whether an entry checks out (`verify_entry`: its manifest's own checksum, and one per array it names,
matching the bytes on disk) is decided here too, for the store's reads and `store info` alike."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import stat
from pathlib import Path

import numpy as np

from harness.io import file_sha256, write_failure
from harness.manifest import DIGEST_FIELD, Manifest


def user_name(uid: int) -> str:
    """The user a file belongs to, as messages name whose it is (`uid N` for one the system does not know)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unreadable_fix(path: Path) -> str:
    """The fix for an entry folder this process may not read. Another user's (a member of a group's
    store who wrote it under umask 077, or without the store's group) is that user's to fix: "fix the
    permissions or remove it" asked what its reader may do neither of."""
    try:
        uid = os.lstat(path).st_uid
    except OSError:
        uid = os.geteuid()
    if uid == os.geteuid():
        return f"fix the permissions of {path} or remove it"
    name = user_name(uid)
    return (f"it is {name}'s: {name} makes it readable for you (in a store a group shares: chmod -R g+rX on it, "
            "and umask 002 or 007 for every member), or pass another --store")


def own_files(path: Path, manifest: Manifest | None) -> tuple[str, ...] | None:
    """The names of the files in the entry folder `path` when each is one the store writes there:
    plain files, a manifest.json (the store never leaves an entry without one) and only the arrays
    that manifest names (when it does not parse: only `KEY.NAME.npy` files). None when anything else is there
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
    parse: anything but `KEY.NAME.npy` files), and anything not a plain file."""
    found = _listing(path)
    return [] if found is None else _foreign(found, _read_manifest(path))


def _listing(path: Path) -> list[os.DirEntry[str]] | None:
    """What the real folder `path` holds; None for a link (never listed through: a run rewriting an entry that was a
    link to a user's folder moved the user's files from there into the new entry) or what cannot be listed."""
    if os.path.islink(path):
        return None
    try:
        return list(os.scandir(path))
    except OSError:
        return None


def raw_manifest(path: Path) -> dict | None:
    """The entry's manifest.json as parsed, when it is a JSON object (a damaged or older entry's too); else None
    (a FIFO is not read: it would wait forever)."""
    try:
        _plain_or_missing(path / "manifest.json")
        raw = json.loads((path / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def unchecked(raw: dict | None) -> bool:
    """Whether a parsed manifest lacks its checksum, as every one a memprox before 1 December 2026 wrote:
    today's store never reads such an entry (a run that needs it trains again at its address), though
    nothing in it need be damaged."""
    return raw is not None and DIGEST_FIELD not in raw


#: How the store and `store info` say `unchecked` entries: not damage, an older memprox's.
UNCHECKED = "made by a memprox before 1 December 2026, whose entries carry no checksum"


def _read_manifest(path: Path) -> Manifest | None:
    """The entry's manifest as checked, else as today's Manifest holds it without its checksum, as `store prune`
    reads a damaged entry's: an older memprox's manifest (no checksum) still names the arrays that are the store's
    own. Taken as unreadable, every `.npy` counted as the store's, and a run recomputing such an entry deleted a
    user's `my_analysis.npy` in it with the old entry (prune keeps that entry for it). None when it names none:
    then only `KEY.NAME.npy` files count as the store's (`_array_named`)."""
    try:
        return Manifest.from_json((path / "manifest.json").read_bytes())
    except Exception:
        return lenient_manifest(raw_manifest(path))


def lenient_manifest(raw: dict | None) -> Manifest | None:
    """A damaged or unchecked entry's manifest (`raw`, as parsed) when today's Manifest holds it without its
    checksum: it names the arrays that are the store's own. None when it does not read in any way."""
    try:
        return Manifest.from_dict({k: v for k, v in raw.items() if k != DIGEST_FIELD}) if raw is not None else None
    except Exception:
        return None


def _foreign(found: list[os.DirEntry[str]], manifest: Manifest | None) -> list[str]:
    named = _array_files(manifest)
    return sorted(e.name for e in found if not e.is_file(follow_symlinks=False) or (e.name != "manifest.json" and (
        e.name not in named if named is not None else not _array_named(e.name))))


def _array_named(name: str) -> bool:
    """Whether a file could be one of the store's arrays by its name alone (`KEY.NAME.npy`, as `_write_arrays` names
    them), where no manifest says which are: any `.npy` counted, and `store prune --damaged` of an entry whose
    manifest.json did not parse deleted a user's `my_analysis.npy` in it."""
    return name.endswith(".npy") and name.count(".") >= 2


def _array_files(manifest: Manifest | None) -> set[str] | None:
    """The array files a manifest names (recorders and checksums); None when it names none readably."""
    if manifest is None:
        return None
    try:
        named = {f"{key}.{name}.npy" for key, rec in manifest.recorders.items() for name in rec.arrays}
        return named | {str(k) for k in manifest.checksums}
    except (AttributeError, TypeError):  # a manifest parsed leniently, with odd fields
        return None


# --- whether an entry checks out: its manifest and every array it names ---------------------------

def _named_files(manifest: Manifest) -> set[str]:
    return {f"{key}.{name}.npy" for key, rec in manifest.recorders.items() for name in rec.arrays}


def verify_entry(path: Path, digest: str) -> Manifest:
    """The manifest of the entry folder `path` when it and every array it names check out (`read_manifest`,
    `check_file`). ValueError says what is wrong; OSError (a permission, say) is the caller's to report."""
    if not path.is_dir():
        raise ValueError("it is not a folder")
    manifest = read_manifest(path, digest)
    for fname, sha in sorted(manifest.checksums.items()):
        check_file(path, fname, sha)
    return manifest


def _plain_or_missing(path: Path) -> None:
    """ValueError for a FIFO, socket or device (or a link to one): reading a FIFO would wait forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{path.name} is missing") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path.name} is not a plain file")


def read_manifest(path: Path, digest: str) -> Manifest:
    """The entry's manifest when its own checksum matches, it belongs to `digest`, and its array
    checksums are complete (exactly one per array it names). ValueError says what is wrong;
    OSError (a permission, say) is the caller's to report. The arrays are not hashed here."""
    _plain_or_missing(path / "manifest.json")
    try:
        text = (path / "manifest.json").read_bytes()
    except FileNotFoundError:
        raise ValueError("manifest.json is missing") from None
    manifest = Manifest.from_json(text)
    if manifest.spec_hash != digest:
        raise ValueError("it belongs to another spec")
    named, summed = _named_files(manifest), set(manifest.checksums)
    if named != summed:
        gaps = ", ".join(sorted(named ^ summed)[:3])
        raise ValueError(f"its checksums do not cover exactly the arrays it names ({gaps})")
    return manifest


def check_file(path: Path, fname: str, expected: str) -> None:
    _plain_or_missing(path / fname)
    try:
        digest = file_sha256(path / fname)
    except FileNotFoundError:
        raise ValueError(f"{fname} is missing") from None
    if digest != expected:
        raise ValueError(f"checksum mismatch in {fname}")


def checked_bytes(path: Path, fname: str, expected: str) -> bytes:
    """The file's bytes, checked against its checksum: what is loaded is what was verified."""
    _plain_or_missing(path / fname)
    try:
        data = (path / fname).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{fname} is missing") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"checksum mismatch in {fname}")
    return data


def _write_arrays(folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> dict[str, str]:
    """Each recorder's arrays as `KEY.NAME.npy` in `folder`; their SHA-256, of the bytes as written."""
    checksums: dict[str, str] = {}
    for key, named in arrays.items():
        for name, arr in named.items():
            if np.asarray(arr).dtype.hasobject:  # would need unpickling to read back
                raise TypeError(f"{key}.{name} is an object array; the store keeps numbers only")
            path = folder / f"{key}.{name}.npy"
            try:
                np.save(path, arr)
            except OSError as e:  # numpy's short write has no errno ("requested and written"): the disk's own
                raise write_failure(e, path, path) from e
            checksums[path.name] = file_sha256(path)
    return checksums


def _move_users_files(aside: Path, final: Path) -> None:
    """Move the files the store did not write from an entry set aside (`.old-`) into the entry now at its name (as
    `put` does once the new entry is in), each where that name is free."""
    if aside.name.startswith(".old-") and final.is_dir() and not final.is_symlink():
        for name in (n for n in foreign_names(aside) if not os.path.lexists(final / n)):
            os.rename(aside / name, final / name)
