"""Swapping a set of files into a folder with rollback, for publishing an experiment's outputs: the
old files are set aside, not deleted, until the new set is committed, so an error, Ctrl-C or kill
part-way leaves (or gets back) the old set. The output folder's record (`read_record`) says which
files memprox wrote there. The paths a record or journal names are trusted only when they are plain
relative paths reached through real folders, never through a link.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Collection
from contextlib import suppress
from pathlib import Path, PurePosixPath

from harness.io import atomic_write_text, file_sha256, interrupts_held

# --- paths inside a folder, never through a link -------------------------------------------------------


def is_plain_relpath(rel: object) -> bool:
    """A relative path of ordinary names only: not absolute, no `.` or `..`, no hidden part. A record
    or journal naming anything else (`../x`, `.git/config`, `/etc`) is not trusted."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    return all(part and part not in (".", "..") and not part.startswith(".") for part in rel.split("/"))


def plain_file(root: Path, rel: str) -> Path | None:
    """`root/rel` when it is a regular file reached through real folders only, else None: a link on
    the way could lead out of `root`, to a file that is not the one recorded."""
    path, parts = root, rel.split("/")
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
            return None
    return path


def blocked_by(root: Path, rel: str) -> Path | None:
    """The first folder on the way to `root/rel` that exists but is not a real folder (a file or a
    link), so `rel` cannot be placed without removing it; None when the way is clear."""
    path = root
    for part in rel.split("/")[:-1]:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return path
    return None


def regular_files(root: Path, skip: Collection[str] = ()) -> list[str]:
    """Relative POSIX paths of the regular files under `root`, sorted; links are neither listed nor
    followed."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel not in skip and stat.S_ISREG(os.lstat(path).st_mode):
                found.append(rel)
    return sorted(found)


# --- the output folder's record of what memprox wrote into it -------------------------------------------

#: The output folder's own record of what memprox wrote into it: {"experiment": id, "publish": nonce,
#: "files": {relative path: SHA-256}}. Only files listed there, and unchanged since, are ever removed.
RECORD = ".memprox-outputs.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_record(out: Path) -> tuple[str | None, dict[str, str]]:
    """The folder's record of its outputs: (experiment id, relative path -> SHA-256). A record that is
    missing, or malformed in any entry, counts as none: then no file there is known to be ours."""
    path = plain_file(out, RECORD)
    try:
        data = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None, {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(files, dict) or not isinstance(data.get("experiment"), str):
        return None, {}
    if not all(is_plain_relpath(rel) and isinstance(sha, str) and _SHA256.fullmatch(sha) for rel, sha in files.items()):
        return None, {}
    return data["experiment"], files


def recorded_unchanged(out: Path) -> tuple[str | None, dict[str, str], list[str]]:
    """(owner, recorded files still exactly as memprox wrote them, recorded files changed since).
    A changed file is the user's now: it is never removed, and replaced only with --overwrite."""
    (owner, files), ours, changed = read_record(out), {}, []
    for rel, sha in files.items():
        path = plain_file(out, rel)
        try:
            same = path is not None and file_sha256(path) == sha
        except OSError:  # unreadable: not provably ours
            same = False
        if same:
            ours[rel] = sha
        elif os.path.lexists(out / rel):
            changed.append(rel)
    return owner, ours, changed


# --- swapping a set of files into a folder, with rollback ------------------------------------------------

#: Written first into the folder of set-aside files: what the swap moves, so that a kill part-way is
#: rolled back (or finished) by the next process that finds the folder.
JOURNAL = ".memprox-journal.json"
_JOURNAL_TEMP = re.compile(re.escape(f".{JOURNAL}.") + r"[A-Za-z0-9_]+")  # atomic_write's temporary file


def swap_files(src: Path, dst: Path, incoming: dict[str, str], outgoing: list[str], aside: Path,
               commit: str) -> None:
    """Swap a set of files into the folder `dst`. The `outgoing` files of `dst` (those replaced, and
    stale ones) move into `aside` (an empty folder of the caller's beside `dst`), the `incoming`
    files of `src` (relative path -> SHA-256) move in, and renaming `src/commit` over `dst/commit`
    (atomic) commits the new set. Any error or Ctrl-C before the commit puts every file back and is
    raised again; after it `aside` is deleted. Files of `dst` not named stay untouched, and a folder
    is removed only when empty."""
    journal = {"dst": str(dst), "incoming": incoming, "outgoing": outgoing,
               "folders": _missing_folders(dst, incoming), "commit": [commit, file_sha256(src / commit)]}
    try:
        atomic_write_text(aside / JOURNAL, json.dumps(journal))
    except BaseException:
        shutil.rmtree(aside, ignore_errors=True)  # nothing was moved yet
        raise
    try:
        for rel in outgoing:
            _move(dst / rel, aside / rel)
        for rel in incoming:
            _move(src / rel, dst / rel)
        os.replace(src / commit, dst / commit)
    except BaseException:
        with interrupts_held():
            if roll_back(aside, journal):  # else the next process to find `aside` tries again
                shutil.rmtree(aside, ignore_errors=True)
        raise
    _finish(aside, journal)


def roll_back(aside: Path, journal: dict) -> bool:
    """Undo an uncommitted swap from its journal and the files' state, so it also works after a
    kill: remove the incoming files it placed (known by their checksums), put the set-aside files
    back, remove the folders it made if they are empty. True when every set-aside file is back."""
    dst, outgoing = Path(journal["dst"]), set(journal["outgoing"])
    for rel, sha in journal["incoming"].items():
        if rel in outgoing and not os.path.lexists(aside / rel):
            continue  # the old file was never set aside: what is there is the old file
        placed = plain_file(dst, rel)
        with suppress(OSError):
            if placed is not None and file_sha256(placed) == sha:
                placed.unlink()
    for rel in journal["outgoing"]:
        with suppress(OSError):
            if os.path.lexists(aside / rel) and not os.path.lexists(dst / rel):
                _move(aside / rel, dst / rel)
    for folder in sorted(journal["folders"], key=len, reverse=True):
        with suppress(OSError):
            (dst / folder).rmdir()
    return not any(os.path.lexists(aside / rel) for rel in outgoing)


def recover_swap(aside: Path, dst: Path) -> None:
    """Settle a swap into `dst` that a killed process left in `aside`: finish it if it was
    committed, else roll it back. One killed before its journal was in place (`unstarted`) moved
    nothing and is removed. Any other folder without a well-formed journal for `dst` is left alone:
    nothing proves it is ours."""
    journal = _read_journal(aside)
    if journal is None and unstarted(aside):
        shutil.rmtree(aside, ignore_errors=True)
    if journal is None or journal["dst"] != str(dst):
        return
    commit, sha = journal["commit"]
    done = plain_file(dst, commit)
    if done is not None and file_sha256(done) == sha:
        _finish(aside, journal)
    elif roll_back(aside, journal):
        shutil.rmtree(aside, ignore_errors=True)


def unstarted(aside: Path) -> bool:
    """Whether `aside` is a set-aside folder whose swap was killed before its journal was renamed into
    place: nothing but the journal's temporary file (`atomic_write`'s), or nothing at all. No file
    was moved yet (the journal comes first), so removing it loses nothing."""
    try:
        return all(_JOURNAL_TEMP.fullmatch(p.name) and stat.S_ISREG(os.lstat(p).st_mode) for p in aside.iterdir())
    except OSError:
        return False


def _finish(aside: Path, journal: dict) -> None:
    """After the commit: drop the set-aside files, and folders of `dst` they leave empty. The journal goes
    last: removed as one tree, a kill could take the journal first and leave the old outputs in a folder
    nothing proved ours any more, never removed (storeattack29); so the files it lists go first, then
    their emptied folders, the journal, and the folder itself (empty: `unstarted` removes it if killed)."""
    dst = Path(journal["dst"])
    for rel in journal["outgoing"]:
        folder = (dst / rel).parent
        with suppress(OSError):
            while folder != dst and not os.listdir(folder):
                folder.rmdir()
                folder = folder.parent
    for rel in journal["outgoing"]:
        path = plain_file(aside, rel) if is_plain_relpath(rel) else None
        if path is not None:
            with suppress(OSError):
                path.unlink()
    for folder, _, _ in sorted(os.walk(aside), key=lambda entry: -len(entry[0])):  # the deepest first
        if Path(folder) != aside:
            with suppress(OSError):
                os.rmdir(folder)
    with suppress(OSError):
        (aside / JOURNAL).unlink()
    shutil.rmtree(aside, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """Rename `source` to `target`, making its folders; never over something already there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "something is in the way", str(target))
    os.rename(source, target)


def _missing_folders(dst: Path, files: Collection[str]) -> list[str]:
    """Folders (relative to `dst`) that placing `files` creates."""
    missing = set()
    for rel in files:
        for parent in PurePosixPath(rel).parents:
            if str(parent) != "." and not os.path.lexists(dst / parent):
                missing.add(str(parent))
    return sorted(missing)


def _read_journal(aside: Path) -> dict | None:
    path = plain_file(aside, JOURNAL)
    try:
        journal = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(journal, dict) or not isinstance(journal.get("dst"), str):
        return None
    incoming, outgoing = journal.get("incoming"), journal.get("outgoing")
    folders, commit = journal.get("folders"), journal.get("commit")
    if not (isinstance(incoming, dict) and all(isinstance(v, str) for v in incoming.values())
            and isinstance(outgoing, list) and isinstance(folders, list) and isinstance(commit, list)
            and len(commit) == 2 and all(isinstance(c, str) for c in commit)
            and is_plain_relpath(commit[0].lstrip("."))):  # the commit file is one name, may be hidden
        return None
    rels = [*incoming, *outgoing, *folders]
    return journal if all(is_plain_relpath(r) for r in rels) else None
