"""`memprox store info` and `memprox store prune`: the CLI over `harness.store_admin`.

`info` only reads (a team's read-only store works; nothing is locked, made or cleaned). `prune`
refuses, before removing anything, a selection that is empty, unknown or malformed, a path that
holds no store and a store it cannot write, each with one `error:` line (exit 2). It prints each
thing it removes (or would, with --dry-run) and the bytes freed; an entry in use is skipped and
said so; exit 1 when something selected could not be removed, 130 on Ctrl-C with what was removed
gone whole and the rest whole.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import harness.store_admin as admin
from harness.console import stopped
from harness.errors import HarnessError
from harness.executors.ray_probe import remove_dead_probes
from harness.io import interrupts_held, probe_writable
from harness.store_admin import Entry, Scan, Selection, is_store, remove_checkpoint, remove_entry, scan
from harness.store_entry_files import UNCHECKED
from harness.store_place import link_target, read_only_disk, store_above
from harness.values import parse_dataset

Say = Callable[[str], None]


def add_store_parser(sub: argparse._SubParsersAction, once: type[argparse.Action]) -> argparse.ArgumentParser:
    """The `store` command with `info` and `prune`; `once`: the CLI's flag-given-twice refusal."""
    s = sub.add_parser("store", help="show what the run store holds; remove runs you select", allow_abbrev=False)
    ssub = s.add_subparsers(dest="store_command", required=True, metavar="{info,prune}")
    where = "the run store (default: $MEMPROX_CACHE/store or ~/.cache/memprox/store)"
    info = ssub.add_parser("info", help="what the store holds and how big it is (read only)", allow_abbrev=False)
    info.add_argument("--store", action=once, default=argparse.SUPPRESS, help=where)
    info.add_argument("--runs", action=once, nargs=0, const=True, default=argparse.SUPPRESS,
                      help="one line per entry: hash, label, created, bytes, state, recorders")
    p = ssub.add_parser("prune", help="remove the entries (or checkpoints) selected; criteria combine with AND",
                        allow_abbrev=False, description="Remove what you select; criteria combine with AND, and no "
                        "selection removes nothing. Only the store's own files go, each under its entry's lock (an "
                        "entry in use is skipped) and whole; a user's files, links, runs/, partial/ and locks/ stay.")
    p.add_argument("--store", action=once, default=argparse.SUPPRESS, help=where)
    p.add_argument("--older-than", action=once, metavar="DAYS", default=argparse.SUPPRESS,
                   help="entries created more than DAYS days ago (with --partial: checkpoints not written since)")
    p.add_argument("--dataset", action=once, default=argparse.SUPPRESS, help="entries of this dataset")
    p.add_argument("--model", action=once, default=argparse.SUPPRESS, help="entries of this model")
    p.add_argument("--label-contains", action=once, metavar="TEXT", default=argparse.SUPPRESS,
                   help="entries whose label contains TEXT, a number in it whole: 'seed3' selects seed3, not "
                   "seed30 or seed3000017; 'noise=0.1' not noise=0.15 (e.g. 'noise=0.1', 'seed3', 'then=')")
    for flag, text in (("--unreachable", "entries today's memprox never reads again (made by an older version)"),
                       ("--damaged", "entries that fail the store's integrity check"),
                       ("--partial", "checkpoints of unfinished runs in partial/ (none is resuming now)"),
                       ("--leftovers", "what killed processes left (the cleanup every run does)"),
                       ("--all", "every entry (explicit: there is no default selection)"),
                       ("--dry-run", "print what would be removed; remove nothing")):
        p.add_argument(flag, action=once, nargs=0, const=True, default=argparse.SUPPRESS, help=text)
    s.commands = ssub.choices  # for the CLI's unknown-flag hints
    s.command_dest = "store_command"
    return s


def cmd_store(args: argparse.Namespace, say: Say) -> int:
    """Run `store info` or `store prune`; returns the exit code."""
    opts = {k.replace("-", "_"): v for k, v in vars(args).items()}
    root = _root(opts.get("store"))
    if args.store_command == "info":
        return info(root, bool(opts.get("runs")), say)
    return prune(root, opts, say)


def _root(given: str | None) -> Path:
    from harness.values import expand_home

    if given is not None:
        if not given:
            raise HarnessError("--store is empty; pass the folder of the run store")
        return expand_home(given, "--store")
    from harness.store import default_store

    return default_store()


def _need_store(root: Path) -> None:
    if not is_store(root):
        runs = root / "runs"
        what = "does not exist" if not root.exists() else "is a file, not a folder" if not root.is_dir() else \
            f"holds a runs/ that is a link to {link_target(runs)}, which is no folder" if runs.is_symlink() else \
            "holds a runs/ folder of another tool's (TensorBoard writes runs/<date>_<host>/), not a run store" \
            if runs.is_dir() else "holds no run store (no runs/ folder)"
        above = store_above(root)
        if above is not None and root.exists():  # `--store store/runs`, a run's entry: the store is above
            outer, inside = above
            raise HarnessError(f"--store {root} is {inside}{'/' * root.is_dir()} of the run store {outer}, not a "
                               f"store; pass --store {outer}")
        raise HarnessError(f"--store {root} {what}; pass the --store your runs were trained into")


def _scan(root: Path) -> Scan:
    """The store's contents, or one line naming what cannot be read."""
    _need_store(root)
    try:
        return scan(root)
    except OSError as e:
        raise HarnessError(f"cannot read the run store {e.filename or root} ({e.strerror or e}); fix its "
                           "permissions or pass another --store") from e


def size(n: int) -> str:
    """Bytes, exact, and in the unit a person reads."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n} bytes ({n / scale:.1f} {unit})"
    return f"{n} bytes"


# --- info -----------------------------------------------------------------------------------------

def info(root: Path, runs: bool, say: Say) -> int:
    from tabulate import tabulate

    found = _scan(root)
    complete = [e for e in found.entries if e.status == "complete"]
    say(f"run store: {root.absolute()}")
    say(f"complete entries: {len(complete)}, {size(sum(e.bytes for e in complete))}")
    for reach, words in (("unreachable", "made by an older memprox, never read again (prune --unreachable)"),
                         ("unknown", "spec today's memprox cannot rebuild exactly, so reachability unknown")):
        some = [e for e in complete if e.reach == reach]
        if some:
            say(f"  of which {reach}: {len(some)}, {size(sum(e.bytes for e in some))}: {words}")
    unchecked = [e for e in found.entries if e.unchecked]
    if unchecked:  # an upgrade's, not damage: said as such, so the user neither fears for the disk nor keeps them
        say(f"unreachable entries without a checksum: {len(unchecked)}, {size(sum(e.bytes for e in unchecked))}: "
            f"{UNCHECKED}, never read again; a run that needs one trains again (prune --unreachable)")
    for status, words in (("damaged", "fail the integrity check, recomputed when next needed (prune --damaged)"),
                          ("unreadable", "cannot be read by you (permissions)"),
                          ("foreign", "a link or file named as an entry: never touched")):
        some = [e for e in found.entries if e.status == status and not e.unchecked]
        if some:
            say(f"{status} entries: {len(some)}, {size(sum(e.bytes for e in some))}: {words}")
    if (root / "runs").is_symlink():  # followed, as by the runs trained into it
        say(f"runs/ is a link to {link_target(root / 'runs')}: its entries are this store's, read and pruned there")
    for sub in found.linked:
        say(f"{sub}/ is a link to {link_target(root / sub)}: not walked into, nothing in it is counted or pruned")
    shared = [e for e in found.entries if not e.own and e.status in ("complete", "damaged")]
    if shared:
        say(f"entries holding files that are not the store's own (never pruned): {len(shared)}")
    busy = [i for i in found.checkpoints + found.leftovers if i.busy]
    idle = [i for i in found.checkpoints if not i.busy], [i for i in found.leftovers if not i.busy]
    for what, items, hint in (("partial checkpoints", idle[0], " (prune --partial)"),
                              ("leftovers of killed processes", idle[1], " (prune --leftovers)"),
                              ("other files in runs/ and partial/ (not the store's, never touched)", found.foreign,
                               "")):
        say(f"{what}: {len(items)}, {size(sum(i.bytes for i in items))}{hint if items else ''}")
    if found.probes:
        say(f"Ray run probes: {len(found.probes)} (a running Ray experiment's, telling its jobs they see this store, "
            "or one a killed run left: the next Ray run or prune --leftovers on that host removes that)")
    if busy:  # its entry's lock is held: a leftover only once that experiment ends without removing it
        say(f"in use by a running experiment or prune: {len(busy)}, {size(sum(i.bytes for i in busy))} (checkpoints "
            "and temporary files of runs being trained, stored or removed now; not freeable, not pruned while in use)")
    now = datetime.now(timezone.utc)
    dates = sorted((age, d) for e in complete
                   if (d := e.field("created")) and math.isfinite(age := admin.age_days(d, now)))
    if dates:
        say(f"created: oldest {dates[-1][1]}, newest {dates[0][1]}")
    if complete:
        say(machines_line([e.manifest.machine if e.manifest else {} for e in complete]))
        say("\n" + tabulate(_summary(complete), headers=["dataset", "model", "entries", "bytes"]))
    if runs and found.entries:
        rows = [(e.digest, e.field("label") or "-", e.field("created") or "-", e.bytes, _state(e),
                 ",".join(e.recorders()) or "-") for e in found.entries]
        say("\n" + tabulate(rows, headers=["hash", "label", "created", "bytes", "state", "recorders"]))
    return 0


def machines_line(records: list[dict]) -> str:
    """`machines: 3 on AVX2 AMD EPYC 7763, 1 on AVX512 Intel ...; 2 unrecorded`: where the complete
    entries were trained (`harness.machine`; a run resumed on another kind counts as `X then Y`); runs
    from different kinds agree only up to float rounding."""
    from harness.machine import machine_counts

    counts = machine_counts(records)
    parts = ", ".join(f"{n} on {label}" for label, n in counts.runs)
    older = f"{counts.unrecorded} unrecorded (stored before memprox recorded machines)" if counts.unrecorded else ""
    mixed = " (more than one kind: their scores agree only up to float rounding)" if counts.kinds > 1 else ""
    return f"machines: {'; '.join(p for p in (parts, older) if p)}{mixed}"


def _summary(entries: list[Entry]) -> list[tuple[str, str, int, int]]:
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.field("dataset") or "?", e.field("model") or "?"), []).append(e)
    return [(d, m, len(es), sum(e.bytes for e in es)) for (d, m), es in sorted(groups.items())]


def _state(e: Entry) -> str:
    if e.unchecked:
        return "unreachable (no checksum)"
    return e.reach if e.status == "complete" and e.reach != "current" else e.status


# --- prune ----------------------------------------------------------------------------------------

ENTRY_FLAGS = ("older_than", "dataset", "model", "label_contains", "unreachable", "damaged", "all")


def selection_of(opts: dict) -> tuple[Selection, bool, bool]:
    """(entry criteria, --partial, --leftovers), refusing no selection and combinations that mean nothing."""
    given = [k for k in (*ENTRY_FLAGS, "partial", "leftovers") if k in opts]
    if not given:
        raise HarnessError("store prune needs a selection (--unreachable, --damaged, --partial, --leftovers, "
                           "--older-than DAYS, --dataset NAME, --model NAME, --label-contains TEXT, or --all); "
                           "it never removes everything by default")
    flags = ", ".join("--" + k.replace("_", "-") for k in given)
    if "leftovers" in opts and len(given) > 1:
        raise HarnessError(f"--leftovers takes no other criterion (given: {flags}); run it on its own")
    if "partial" in opts and set(given) - {"partial", "older_than"}:
        raise HarnessError(f"--partial selects checkpoints, which have no manifest: only --older-than combines with "
                           f"it (given: {flags})")
    if "all" in opts and len(given) > 1:
        raise HarnessError(f"--all selects every entry and takes no other criterion (given: {flags})")
    days = _days(opts["older_than"]) if "older_than" in opts else None
    label = _text(opts.get("label_contains"))
    if label is not None and not label.strip():  # a space is in every label ("digits clean mlp seed0"): all would go
        what = "white space alone, which every label holds" if label else "empty"
        raise HarnessError(f"--label-contains is {what}; pass some text of the labels to select")
    dataset = None if (named := _text(opts.get("dataset"))) is None else parse_dataset(named)  # as `run` writes it
    selection = Selection(days, dataset, _text(opts.get("model")), label, "unreachable" in opts, "damaged" in opts,
                          "all" in opts)
    return selection, "partial" in opts, "leftovers" in opts


def _text(arg: str | None) -> str | None:
    """An argument as the manifests hold it (UTF-8): under LC_ALL=C with PYTHONUTF8=0 Python keeps a
    UTF-8 `--dataset imagefolder:/data/café` as surrogates, which matched no entry."""
    try:
        return None if arg is None else os.fsencode(arg).decode("utf-8")
    except UnicodeError:
        return arg


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise HarnessError(f"--older-than takes a number of days, 0 or more (got {text!r}); e.g. --older-than 30")
    return days


def _check_names(found: Scan, sel: Selection) -> None:
    for what, wanted in (("dataset", sel.dataset), ("model", sel.model)):
        present = sorted({v for e in found.entries if (v := e.field(what))})
        if wanted is not None and wanted not in present:
            raise HarnessError(f"no entry of {what} {wanted!r} in the store; it holds: {', '.join(present) or 'none'}")


def _check_writable(root: Path, dry: bool = False) -> None:
    """The refusal the real prune gives a store it cannot write, said by `--dry-run` too (which asks the
    permissions rather than writing a probe file): it listed "would remove 2" where the prune then refused."""
    for sub in ("runs", "partial", "locks"):
        folder = root / sub
        if not folder.exists() and sub == "partial":
            continue
        if not folder.exists() and sub == "locks":  # prune makes locks/ in the store's folder (a store of runs/
            folder = root  # alone): a read-only one crashed on that mkdir, its --dry-run saying "would remove 1"
        try:
            if not dry:
                probe_writable(folder)
            elif read_only_disk(folder):  # os.access says EACCES alone: "Permission denied" sent users to chmod
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
            elif not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
        except OSError as e:
            if e.errno != errno.ENOSPC:  # a full disk is when pruning is needed
                raise HarnessError(f"run store folder {folder} is not writable ({e.strerror}); prune needs a store "
                                   "you may write (a team's read-only store is pruned by its owner)") from e


def prune(root: Path, opts: dict, say: Say) -> int:
    sel, checkpoints, leftovers = selection_of(opts)
    _need_store(root)
    dry = "dry_run" in opts
    _check_writable(root, dry)
    if not dry:
        (root / "locks").mkdir(exist_ok=True)
    found = _scan(root)
    _check_names(found, sel)
    if (checkpoints or leftovers) and found.linked:
        raise HarnessError(f"run store folder {root / 'partial'} is a link (to {link_target(root / 'partial')}); prune "
                           "never walks into links: make partial/ a real folder, or remove checkpoints by hand")
    now = datetime.now(timezone.utc)
    if leftovers:  # each with its digest (whose lock says whether it is in use), not a removal
        listed = [(i.name, admin.tree_bytes(i.path, freeable=True), i.digest) for i in found.leftovers]
        code = _prune_listed(root, listed, dry, leftovers, say, {i.name for i in found.leftovers if i.busy})
        for name in remove_dead_probes(root / "partial", dry_run=dry):  # this host's, process gone, lock free
            say(f"{'would remove' if dry else 'removed'} partial/{name} (the probe file of a killed Ray run)")
        return code
    if checkpoints:
        days = sel.older_than_days
        targets = [(i.name, admin.tree_bytes(i.path, freeable=True), (lambda i=i: remove_checkpoint(root, i, days)))
                   for i in found.checkpoints if days is None or admin.idle_days(i.path) > days]
    else:
        targets = [(f"runs/{e.digest}  {e.field('label') or '?'}", admin.tree_bytes(e.path, freeable=True),
                    (lambda e=e: remove_entry(root, e.digest, sel, now))) for e in found.entries if sel.matches(e, now)]
        _say_kept(found, sel, now, say)
    if dry:
        busy = {i.name for i in found.checkpoints if i.busy} | {f"runs/{e.digest}  {e.field('label') or '?'}"
                                                                 for e in found.entries if admin.held(root, e.digest)}
        return _prune_listed(root, targets, dry, leftovers, say, busy)
    tally = {"freed": 0, "done": 0, "skipped": 0, "failed": 0}
    try:
        for name, _, remove in targets:
            with interrupts_held():  # Ctrl-C lands between removals: each is whole, and counted
                _remove_one(name, remove, tally, say)
    except KeyboardInterrupt:
        return stopped(f"interrupted; {tally['done']} removed ({size(tally['freed'])} freed), the rest is kept "
                       "whole, rerun to resume")
    skipped = f"; {tally['skipped']} skipped" if tally["skipped"] else ""
    say(f"removed {tally['done']} of {len(targets)} selected, freed {size(tally['freed'])}{skipped}")
    return 1 if tally["failed"] else 0


def _say_kept(found: Scan, sel: Selection, now: datetime, say: Say) -> None:
    """A line for each entry the criteria match that holds a file of someone else's: prune never
    removes it, and it went unsaid (only `store info` counted such entries). A folder named as an
    entry without the manifest every entry has is no entry of the store's: it gets no line."""
    for e in found.entries:
        if (not e.own and (e.manifest is not None or e.raw is not None or (e.path / "manifest.json").is_file())
                and e.status in ("complete", "damaged")
                and sel.matches(replace(e, own=True), now)):
            say(f"kept runs/{e.digest}  {e.field('label') or '?'}: it holds files that are not the store's own, "
                "which prune never removes; move them out of it to prune it")
    unreadable = [e for e in found.entries if e.status == "unreadable"]
    if unreadable:  # no criterion can be checked on them: `--all` said "removed 0 of 0" and nothing of them
        first = f" (runs/{unreadable[0].digest}: {unreadable[0].reason})" if unreadable[0].reason else ""
        say(f"kept {len(unreadable)} entr{'y' if len(unreadable) == 1 else 'ies'} you cannot read{first}: prune "
            "cannot tell what they hold; their owner prunes them, or makes them readable for you (docs/store.md)")


def _remove_one(name: str, remove: Callable[[], tuple[int | None, str]], tally: dict[str, int], say: Say) -> None:
    try:
        got, why = remove()
    except OSError as e:  # the file system refused (permissions): this one stays, whole, the others go on
        got, why = None, f"cannot be removed ({e.strerror or e}{f' on {e.filename}' if e.filename else ''})"
        tally["failed"] += 1
    if got is not None:
        tally["freed"] += got
        tally["done"] += 1
        say(f"removed {name}  {size(got)}")
    elif why:  # none: another prune removed it first
        tally["skipped"] += 1
        tally["failed"] += why.startswith("set aside")
        say(f"skipped {name}: {why}")


def _prune_listed(root: Path, targets: list, dry: bool, leftovers: bool, say: Say, busy: set[str]) -> int:
    """--dry-run, or --leftovers (the cleanup every run does): an entry a kill left set aside mid-swap
    is put back, not removed, and said so; neither is counted as freed, nor is what a running experiment
    holds (`busy`: its lock is held; the removal would skip it)."""
    def back(name: str) -> bool:  # runs/.old-<digest>-PID, its entry not at its name
        return leftovers and Path(name).name.startswith(".old-") and not (root / "runs" / name[10:30]).exists()

    if dry:
        gone = [t for t in targets if not back(t[0]) and t[0] not in busy]
        for name, nbytes, _ in targets:
            what = "put back (an entry a kill left mid-swap)" if back(name) else \
                "skip (in use by a running experiment or prune)" if name in busy else "remove"
            say(f"would {what} {name}  {size(nbytes)}")
        say(f"would remove {len(gone)}, freeing {size(sum(t[1] for t in gone))} (dry run: nothing removed)")
        return 0
    from harness.store import RunStore

    sizes = {Path(name).name: nbytes for name, nbytes, _ in targets}
    put_back = [name for name, _, _ in targets if back(name)]
    removed = RunStore(root, create=False).clean()  # the cleanup every run does: own leftovers, lock free
    if any(os.path.lexists(root / name) and not admin.held(root, digest) for name, _, digest in targets):
        removed += RunStore(root, create=False).clean()  # once more: a `store info` may have probed a lock just then
    back_now = [name for name in put_back if Path(name).name in removed]  # by this prune, not another at once
    removed = [name for name in removed if f"runs/{name}" not in put_back]
    for name in removed:
        say(f"removed {name}  {size(sizes.get(name, 0))}")
    for name in back_now:
        say(f"put back runs/{name[10:30]} (an entry a kill left mid-swap)")
    failed = 0
    for name, _, digest in targets:
        if os.path.lexists(root / name):  # clean() passed it over: in use, or it could not
            in_use = admin.held(root, digest)
            failed += not in_use
            say(f"skipped {name}: " + ("in use by another process" if in_use else "could not be removed (the file "
                                       "system refused, or it holds files not the store's own now)"))
    say(f"removed {len(removed)} of {len(targets) - len(put_back)} leftovers, freed "
        f"{size(sum(sizes.get(n, 0) for n in removed))}")
    return 1 if failed else 0
