"""Where a new run store may go, and whether a store can take new entries there: `--store ~` or
`--store .` in a project was accepted, and the store then put its runs/, partial/ and locks/ among
the user's files. A store that cannot be written (read-only, another user's, nearly full) serves
only the runs it holds. Both are checked before training."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from harness.errors import HarnessError
from harness.io import free_bytes_short, nearest_folder, probe_writable

#: The fix for a store this user may not reach; "pass another --store" becomes the MEMPROX_CACHE fix (`write_problem`).
STORE_CLOSED_FIX = "pass another --store (in a folder you may enter)"


def enterable(path: Path, flag: str, fix: str, probe: str = "") -> None:
    """HarnessError naming the folder this user may not enter on the way to `path` (or `path/probe`): another
    user's 0700 home. Every later check of it (exists, is_dir) raised PermissionError: a traceback, exit 1."""
    try:
        os.stat(path / probe if probe else path)
    except PermissionError as e:
        here = Path(os.path.abspath(path / probe if probe else path))
        closed = next((p for p in [*reversed(here.parents), here] if not os.access(p, os.X_OK)), here.parent)
        raise HarnessError(f"{flag} {path} cannot be reached: this user may not enter {closed} ({e.strerror}); "
                           f"{fix}") from e
    except OSError:  # missing, or a file on the way: the checks after say what is wrong
        pass


def check_place(root: Path) -> None:
    """HarnessError when `root` is no place for a new store (`_is_home`, `_foreign_entries`); an
    existing store (runs/) stays usable wherever it is."""
    enterable(root, "--store", STORE_CLOSED_FIX, probe="runs")
    if (root / "runs").is_dir() and a_store(root):
        return
    if root.exists() and not root.is_dir():
        raise HarnessError(f"--store {root} is a file, not a folder; pass a folder (a new one, or an existing store)")
    if root.is_symlink() and not root.exists():
        raise HarnessError(f"--store {root} is a link to {link_target(root)}, which does not exist (a disk not "
                           "mounted?); mount it, or pass the folder of your store")
    if (root / "runs").is_symlink():  # a store's runs on another disk, not mounted now: never made again here
        raise HarnessError(f"--store {root} holds a runs/ that is a link to {link_target(root / 'runs')}, which is no "
                           "folder (a disk not mounted?); mount it, or point the link at the folder of your runs")
    if _is_home(root):  # it holds the user's files, hidden ones too
        raise HarnessError(f"--store {root} is the home folder: the store would add runs/, partial/ and locks/ to it; "
                           "pass a folder of its own (the default is $MEMPROX_CACHE/store or ~/.cache/memprox/store)")
    above = store_above(root)
    if above is not None:  # `--store store/partial`: a nested store, whose runs the outer one lists as other files
        outer, inside = above
        raise HarnessError(f"--store {root} is {inside}/ of the run store {outer}: a store made there would be the "
                           f"outer store's files, which none of its commands reads or prunes; pass --store {outer}, "
                           "or a folder outside it")
    others = _foreign_entries(root)
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise HarnessError(f"--store {root} is a folder of other files ({shown}), not a run store: the store would add "
                           "runs/, partial/ and locks/ among them; pass a new or empty folder, or an existing store")


def store_above(root: Path) -> tuple[Path, Path] | None:
    """(The memprox run store a folder lies in, the folder's path inside it), or None. The store is an
    ancestor holding runs/ beside partial/ or locks/ and nothing else but hidden entries, as a store
    does: a runs/ alone, or beside another tool's locks/ among a project's files, is no store. The
    path as written, `..` taken away (`store/../sibling` lies beside the store), and where it leads
    (a link into store/partial; a store whose runs/ is a link to another disk is found as written)."""
    written = Path(os.path.abspath(root))
    try:
        real = root.resolve()
    except (OSError, RuntimeError):  # a link loop: as written
        real = written
    for path in (written, real):
        for folder in path.parents:
            if (folder / "runs").is_dir() and ((folder / "partial").is_dir() or (folder / "locks").is_dir()) \
                    and not [e for e in _foreign_entries(folder) if e != "runs"]:
                return folder, path.relative_to(folder)
    return None


def link_target(link: Path) -> str:
    """Where the link `link` leads, as it was made: resolving a link that leads to itself (a loop) raises."""
    try:
        return os.readlink(link)
    except OSError:
        return str(link)


def _is_home(root: Path) -> bool:
    try:
        return root.resolve() == Path.home().resolve()
    except RuntimeError:  # no home folder at all
        return False


def _foreign_entries(root: Path) -> list[str]:
    """What a folder that is no store yet holds besides a store's own folders:
    `--store ~` or `--store .` in a project would have scattered runs/, partial/ and locks/ among
    the user's files. Hidden entries (.DS_Store, write probes) do not count; a runs/ that is a store's
    (`a_store`) never gets here."""
    if not root.is_dir():
        return []
    return sorted(e.name for e in os.scandir(root) if e.name not in ("partial", "locks") and not e.name.startswith("."))


#: An entry's name in runs/ (`RunSpec.digest()`); `harness.store_scan` reads entries by it too.
DIGEST = re.compile(r"[0-9a-f]{20}")


def a_store(root: Path) -> bool:
    """Whether `root`, holding a runs/ folder, is a run store: runs/ beside partial/ or locks/ (a store makes all
    three at once), or a runs/ of nothing but entries, or empty (a store's runs copied alone; an older store's
    runs/, its other folders not made yet), or one holding an entry of the store's among other files (a README put
    there, a mount point's lost+found, after partial/ and locks/ were deleted: such a store was refused as "a
    folder of other files (runs)"). Another tool's runs/ in a project (TensorBoard's SummaryWriter writes
    runs/<date>_<host>/ by default) made `--store .` there a store: locks/ and partial/ were added among the user's
    files and the run stored into TensorBoard's folder."""
    return (root / "partial").is_dir() or (root / "locks").is_dir() or _entries_only(root / "runs") \
        or _holds_entry(root / "runs")


def _entries_only(runs: Path) -> bool:
    """Whether the folder `runs` holds nothing but entries (hex digests), hidden names and a file system's
    lost+found (runs/ a disk of its own) (an unreadable one: as before, a store; its own reads say what is wrong)."""
    try:
        return all(DIGEST.fullmatch(e.name) or e.name.startswith(".") or e.name == "lost+found"
                   for e in os.scandir(runs))
    except OSError:
        return True


def _holds_entry(runs: Path) -> bool:
    """Whether the folder `runs` holds an entry as only the store makes one: a real folder named as a digest that
    holds a manifest.json file (no other tool names a folder so)."""
    try:
        return any(DIGEST.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
                   and os.path.isfile(os.path.join(e.path, "manifest.json")) for e in os.scandir(runs))
    except OSError:
        return False


def write_problem(root: Path) -> tuple[str, str] | None:
    """(What is wrong, the fix) when the store at `root` cannot take new entries: read-only, another
    user's, nearly full, or a path that runs through a file. Checked before anything trains, not after, as is the
    place (`check_place`). A store that comes from MEMPROX_CACHE (no --store given) names the variable: "pass another
    --store" alone left its user looking for a flag they never gave."""
    env = _from_cache_variable(root)
    try:
        check_place(root)
    except HarnessError as e:
        if env is None:
            raise
        raise _cache_named(e, root, env) from e
    other = f"set MEMPROX_CACHE to another folder (it is {env}) or pass --store" if env else "pass another --store"
    for sub in ("runs", "partial", "locks"):
        try:
            probe_writable(nearest_folder(root / sub))
        except OSError as e:
            if e.errno == errno.ENOTDIR:  # `--store /etc/passwd/x`: "fix its permissions" could not help
                file = _file_on_path(root / sub)
                return (f"run store {root} cannot be made: its path runs through {file}, which is a file, not a folder",
                        other.replace("another folder", "a folder") if env else "pass a --store whose path is "
                        "folders only")
            return (f"run store folder {root / sub} is not writable ({e.strerror})", other if
                    e.errno == errno.EROFS else f"fix its permissions or {other}")
    free = free_bytes_short(nearest_folder(root))
    if free is not None:
        return f"run store {root} has only {free / 2**20:.0f} MiB free", f"free some space or {other}"
    return None


def _file_on_path(path: Path) -> Path:
    """The first item on the way to `path` that exists and is no folder (a file where a folder must be)."""
    path = Path(os.path.abspath(path))
    for step in [*reversed(path.parents), path]:
        if os.path.exists(step) and not os.path.isdir(step):
            return step
    return path


def store_enterable(root: Path) -> None:
    """`enterable` for the store at `root`, naming MEMPROX_CACHE where the store is its (no --store given):
    `store info` and `store prune` said "--store ... pass another --store" to a user who gave none (review31b)."""
    try:
        enterable(root, "--store", STORE_CLOSED_FIX, probe="runs")
    except HarnessError as e:
        env = _from_cache_variable(root)
        if env is None:
            raise
        raise _cache_named(e, root, env) from e


def _cache_named(e: HarnessError, root: Path, env: str) -> HarnessError:
    """Error `e` about the store at `root` reworded for a store MEMPROX_CACHE=`env` names: its flag and fix."""
    text = str(e).replace(f"--store {root}", f"the run store {root} (from MEMPROX_CACHE={env})", 1) \
        .replace("pass another --store", "set MEMPROX_CACHE to another folder or pass --store")
    if "set MEMPROX_CACHE" not in text:  # "pass a new or empty folder": no --store was given to replace
        text += "; set MEMPROX_CACHE to another folder (the store is its store/), or pass --store"
    return HarnessError(text)


def _from_cache_variable(root: Path) -> str | None:
    """MEMPROX_CACHE's value when `root` is the store it names (`harness.store.default_store`: no --store given, or
    --store given as that same folder), else None."""
    env = os.environ.get("MEMPROX_CACHE")
    if not env:
        return None
    from harness.datasets.base import default_cache_dir  # lazy: as harness.store.default_store

    try:
        default = default_cache_dir() / "store"
    except HarnessError:
        return None
    return env if os.path.abspath(default) == os.path.abspath(root) else None


def refusal(problem: tuple[str, str], missing: list[str]) -> HarnessError:
    """The refusal of runs that must be trained into a store that cannot be written (`write_problem`)."""
    (what, fix), shown = problem, ", ".join(missing[:2]) + (f" and {len(missing) - 2} more" if len(missing) > 2 else "")
    return HarnessError(f"{what}, and {len(missing)} run(s) this experiment needs must be trained into it ({shown}); "
                        f"{fix} (a store that cannot be written serves only the runs it holds)")


def read_only_disk(folder: Path) -> bool:
    """Whether `folder` is on a file system mounted read-only (`store prune --dry-run` asks os.access, whose False
    does not say why)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): os.access alone
        return False
