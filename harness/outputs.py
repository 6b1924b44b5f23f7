"""The output folder (`--out`): checked before anything trains, written to a staging folder, and published into it
at the end with rollback, so an interrupted experiment never leaves half an output folder and a folder never mixes
two experiments. The staging folder is made where a rename into `--out` works: beside it, or, where `--out` is a
mount point (another file system than its parent) or its parent may not be written, inside it under a hidden name.

The folder's own record (`.memprox-outputs.json`: each file with its checksum) says what memprox wrote there: only
those files, unchanged since, are ever replaced or removed, so a user's files, a repository or the store beside them
are never touched. What killed experiments leave (a staging folder whose owner's lock is free, a swap of outputs
part-way) is settled by the next one on that --out; a run on another --out beside it names such a staging folder
(`harness.outputs_leftovers`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

import torch
from filelock import FileLock

from harness.config import ExperimentConfig
from harness.errors import HarnessError, StorageError
from harness.evaluation import ExperimentResult
from harness.file_swap import (
    RECORD,
    blocked_by,
    is_plain_relpath,
    read_record,
    recorded_unchanged,
    regular_files,
    swap_files,
)
from harness.io import (
    NO_ROOM,
    atomic_write,
    atomic_write_text,
    file_sha256,
    free_bytes_short,
    nearest_folder,
    probe_writable,
    rmtree,
    room_fix,
)
from harness.leaderboard import markdown
from harness.outputs_leftovers import STAGING_LOCK, STAGING_MARKER, _say_others_left, clean_stale
from harness.outputs_place import (
    _apart,
    _has_content,
    _new_folder,
    _out_after_training,
    _out_lock,
    _resolved,
    _trained_on,
    _whose,
    _work_place,
)
from harness.run_summary import TABLES, summary
from harness.runspec import RunSpec
from harness.store import StoredRun
from harness.store_place import enterable

#: What the marker tells a person who finds the folder (hidden, beside --out): whose it is, and that it may go.
_STAGING_NOTE = ("memprox staging folder: memprox process {pid} writes an experiment's outputs here, moves them into "
                 "{out} and then removes this folder.\nIf no memprox run with --out {out} is running, one was killed "
                 "here: the next run with that --out removes this folder (and finishes or undoes the publish that was "
                 "killed); you may also delete it yourself.\n")
#: What every experiment writes into --out: files, and folders of files (checked before training).
OUTPUT_FILES, OUTPUT_FOLDERS = ("leaderboard.csv", "leaderboard.md", "raw.csv", "summary.json", RECORD), ("scores",)
#: Staging folder -> the lock its process holds (released by `publish` before renaming the folder).
_HELD: dict[Path, FileLock] = {}


def check_out(out: Path, identity: str, overwrite: bool, store: Path, data_paths: Collection[Path] = (),
              folders: Collection[str] = (), former: Collection[str] = (), device: str | None = None) -> None:
    """Before training: --out must be a writable folder apart from the run store and from the data (`data_paths`:
    the folders the experiment reads; files are left out), holding no other experiment's results, no files memprox
    cannot show it wrote, none changed since it wrote them (unless --overwrite, which replaces only files a new
    output has the name of), and nothing in the way of an output (a folder named leaderboard.csv, a file named
    scores or as one of `folders`, those the selected tasks write into). An --out marked with one of `former`, the
    ids this experiment had before (`harness.config_identity.former_ids`), is this experiment's, unless its
    outputs were computed on another kind of `device` (`_mine`)."""
    out, store = _resolved(out, "--out"), _resolved(store, "--store")
    _apart(out, store, "--out", "the run store", "pass an --out outside the store that does not contain it")
    for path in data_paths:
        enterable(Path(path).expanduser(), "the data path", "pass data in a folder you may enter, or ask its owner")
    for data in {Path(p).expanduser().resolve() for p in data_paths if Path(p).expanduser().is_dir()}:
        mix = "would mix with the data (an image folder reads every subfolder as a class)"
        _apart(out, data, "--out", "the dataset folder", f"its outputs {mix}; pass an --out apart from the data")
        _apart(store, data, "--store", "the dataset folder", f"its runs {mix}; pass a --store apart from the data")
    if out == out.parent:
        raise HarnessError(f"--out {out} is the file system root; pass a folder")
    enterable(out, "--out", "pass an --out in a folder you may enter")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file, not a folder; pass a folder")
    try:  # what publishing needs: a staging folder that renames into --out (`_work_place`), its lock
        if not out.parent.is_dir():  # made by `staging`: nothing is there to clean up yet
            place = nearest_folder(out.parent)
            probe_writable(place)
            _work_place(out)  # the names it will take there fit
        else:
            probe_writable(out if out.exists() else out.parent)
            place = _work_place(out)
            with _out_lock(out):
                clean_stale(out)
            _say_others_left(out)
    except OSError as e:
        what, fix = ("is full", f"{room_fix(e, '')} or pass another --out") if e.errno in NO_ROOM else \
            ("is not writable", "pass a writable --out")
        raise HarnessError(f"output folder {out} {what} ({e.strerror}); {fix}") from e
    if (free := free_bytes_short(place)) is not None:
        raise HarnessError(f"output folder {out} has only {free / 2**20:.0f} MiB free; free some space or pass "
                           "another --out")
    if not out.exists():
        return
    try:
        owner, ours, changed = recorded_unchanged(out)
        content = _has_content(out)
    except OSError as e:
        raise HarnessError(f"--out {out} cannot be read ({e.strerror}); pass a readable --out") from e
    mine = _mine(out, owner, ours, identity, former, device)
    _check_in_the_way(out, (*OUTPUT_FOLDERS, *folders), read_record(out)[1] if mine else ())
    _probe_folders(out, (*OUTPUT_FOLDERS, *folders))
    if overwrite:
        return
    if not mine and content:
        gone = "that experiment's outputs go, " * (owner is not None)
        whose = _whose(out, owner)
        if owner is not None and "summary.json" in ours and (trained := _trained_on(out)) not in (None, device):
            whose += f" (computed on {trained}; this one trains on {device}, which agrees with it to rounding only)"
        raise HarnessError(f"--out {out} holds {whose}; pass another --out, or --overwrite to replace "
                           f"the outputs there ({gone}files of yours stay unless a new output has their name)")
    foreign = [name for name in OUTPUT_FILES if name != RECORD and os.path.lexists(out / name) and name not in ours]
    if changed or foreign:
        what = f"{changed[0]} was changed after memprox wrote it" if changed else \
            f"{foreign[0]} was not written by memprox"
        raise HarnessError(f"--out {out}: {what}; move it away, or pass --overwrite to replace it")


def _mine(out: Path, owner: str | None, ours: Collection[str], identity: str, former: Collection[str],
          device: str | None) -> bool:
    """Whether `out` holds this experiment's outputs: marked with its id or a former one, and computed on its kind of
    `device` where the folder says (`_trained_on`, read from the summary.json memprox wrote, among `ours`: one
    changed since is the user's; `device` None: not asked). The id alone took another device's folder: the CPU's
    id is the one `auto` had, so `--device cpu` on a GPU machine took the folder of an `auto` run there (CUDA's
    results), and, `auto` being a former id of CUDA there, `--device cuda` took a CPU run's folder, each replacing
    the other device's outputs without --overwrite, though a CPU and a GPU are two experiments."""
    if owner is None or (owner != identity and owner not in former):
        return False
    return device is None or "summary.json" not in ours or _trained_on(out) in (None, device)


def _check_in_the_way(out: Path, folders: Collection[str], recorded: Collection[str] = ()) -> None:
    """A folder where memprox writes a file, or a file or link where it writes a folder (every experiment's and
    its tasks'; `recorded`: the files inside them that this experiment wrote there before, and writes again):
    refused before training, every one at once (`publish` removes neither: it would refuse after it). A folder
    made at `scores/<file>.csv` passed with --overwrite and was refused after training, and without it the
    refusal said that --overwrite would replace it."""
    found: dict[Path, str] = {}  # by path: a blocker on the way to several files is named once
    for name in dict.fromkeys((*OUTPUT_FILES, *folders)):
        try:
            mode = os.lstat(out / name).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode) != (name in folders):
            what = "a folder" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "a file"
            found[out / name] = f"is {what}, where memprox writes its {name + '/' if name in folders else name}"
    for rel in recorded:
        if (way := blocked_by(out, rel)) is not None:
            found.setdefault(way, f"is {'a link' if way.is_symlink() else 'a file'}, where memprox writes the folder "
                                  f"of its {rel}")
        elif (out / rel).is_dir() and not (out / rel).is_symlink():
            found.setdefault(out / rel, f"is a folder, where memprox writes its {rel}")
    if found:
        named = "; ".join(f"{path} {why}" for path, why in found.items())
        raise HarnessError(f"--out {out}: {named}; move {'them' if len(found) > 1 else 'it'} away and rerun")


def _probe_folders(out: Path, folders: Collection[str]) -> None:
    """The output folders already in `out` (`scores/`, a task's) must take new files too: a `scores/` made
    read-only passed the check of `out` alone, and the run was refused after training."""
    for name in folders:
        folder = out / name
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            probe_writable(folder)
        except OSError as e:
            what, fix = ("is full", room_fix(e, "")) if e.errno in NO_ROOM else ("is not writable", "make it writable")
            raise HarnessError(f"output folder {folder} {what} ({e.strerror}); {fix} or pass another --out") from e


@contextmanager
def staging(out: Path | None) -> Iterator[Path | None]:
    """A temporary folder for --out (`_work_place`), locked and marked as memprox's when made, that
    the outputs are written to and published from (None without --out)."""
    if out is None:
        yield None
        return
    out = _out_after_training(out)
    tmp = None
    try:  # a write refused here or in the block (a task's table or figure: not only `write`) is one line
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_folder(out, "tmp", _work_place(out))
        _HELD.setdefault(tmp, FileLock(tmp / STAGING_LOCK)).acquire()
        (tmp / STAGING_MARKER).write_text(_STAGING_NOTE.format(pid=os.getpid(), out=out), encoding="utf-8",
                                           errors="surrogateescape")
        yield tmp
    except OSError as e:
        raise _write_error(out, e, tmp) from e
    finally:
        if tmp is not None:
            _release(tmp)
            _remove_staging(tmp)


def _remove_staging(tmp: Path) -> None:
    """Remove the staging folder `tmp`, its marker last: removed first (as a whole-folder removal may), a kill
    part-way left the lock and an empty scores/ without the marker that proves the folder memprox's, and no run
    removed it again."""
    with suppress(OSError):
        for name in os.listdir(tmp):
            if name != STAGING_MARKER:
                rmtree(tmp / name)
    rmtree(tmp)


def _release(tmp: Path) -> None:
    if (lock := _HELD.pop(tmp, None)) is not None and lock.is_locked:
        lock.release()


def write(result: ExperimentResult, runs: dict[RunSpec, StoredRun], tmp: Path, artifacts: dict[str, list[str]],
          cfg: ExperimentConfig, identity: str, device: torch.device, phases: Callable[[], dict[str, float]],
          former: Collection[str] = ()) -> None:
    """Write every output into `tmp` and publish them into --out; StorageError when the file system refuses.
    `former`: the ids the experiment had before, of the config the --out check read (`check_out`): `cfg` may
    since have lost its preset's subset, whose former ids are another config's."""
    out = _out_after_training(cfg.out)  # type: ignore[arg-type]  # the experiment writes only with an --out
    try:
        for name, frame in result.scores.items():
            path = f"scores/{score_file(name)}.csv"
            atomic_write(tmp / path, partial(frame.to_csv, index=False))
            result.outputs.setdefault("scores", []).append(path)
        atomic_write(tmp / "raw.csv", lambda p: result.raw.to_csv(p, index=False))
        atomic_write(tmp / "leaderboard.csv", lambda p: result.leaderboard.to_csv(p, index=False))
        atomic_write_text(tmp / "leaderboard.md", markdown(result.leaderboard))
        result.outputs.update(artifacts)
        text = json.dumps(summary(result, runs, cfg, identity, device, phases()), indent=1, default=str)
        atomic_write_text(tmp / "summary.json", text)  # its write phase ends above (summary and record follow)
        result.outputs = {**TABLES, "summary": ["summary.json"], **result.outputs}  # every file, as in summary.json
        write_record(tmp, identity)
        publish(tmp, out, identity, cfg.overwrite, former, device.type)
    except OSError as e:
        raise _write_error(out, e, tmp) from e


def _write_error(out: Path, e: OSError, tmp: Path | None) -> StorageError:
    """The file as named in --out (the staging folder is gone when the line is read), why, and the fix:
    room when that ran out, not the folder's permissions."""
    where = Path(e.filename) if e.filename else tmp or out
    where = out / where.relative_to(tmp) if tmp is not None and (where == tmp or tmp in where.parents) else \
        nearest_folder(where)  # a staging folder that could not be made: the folder that refused it
    fix = room_fix(e, "make it writable")
    return StorageError(f"cannot write outputs for {out} to {where} ({e.strerror or e}); {fix} or pass another --out, "
                        "and rerun: every run is kept in the store")


def score_file(name: str) -> str:
    """A setting's name as a plain file name: a label file's path in it (`labels=C:\\x.npy`) may hold a
    backslash, which no record may name (`is_plain_relpath`), so the write failed after training."""
    return name.replace("\\", "_").replace("/", "_")


def write_record(tmp: Path, identity: str) -> None:
    """Record every file written into `tmp` with its checksum. The nonce makes each publish's record
    unique, so after a kill part-way a committed swap can be told from one that was not."""
    files = {rel: file_sha256(tmp / rel) for rel in regular_files(tmp, skip=(STAGING_MARKER, STAGING_LOCK, RECORD))}
    hidden = [rel for rel in files if not is_plain_relpath(rel)]
    if hidden:  # a record naming them would not be trusted (it could name .git/...): a bug, not bad input
        raise RuntimeError(f"outputs with hidden names cannot be recorded: {', '.join(hidden)}")
    record = {"experiment": identity, "publish": os.urandom(8).hex(), "files": files}
    atomic_write_text(tmp / RECORD, json.dumps(record, indent=1))


def publish(tmp: Path, out: Path, identity: str, overwrite: bool, former: Collection[str] = (),
            device: str | None = None) -> None:
    """Move the complete outputs in `tmp` (with their record) into `out`, under the folder's lock. A
    folder that does not exist is the staging folder renamed. Into an existing one the new files are
    swapped in with rollback (`harness.file_swap.swap_files`); set aside, and deleted once the new set is
    in, are only memprox's own earlier outputs (recorded, unchanged; another experiment's too, with
    --overwrite) and, with --overwrite, files a new output has the name of. All else stays."""
    with _out_lock(out):
        clean_stale(out)
        if not os.path.lexists(out):
            _release(tmp)  # no cleaner runs meanwhile: they hold the folder's lock
            for name in (STAGING_MARKER, STAGING_LOCK):
                (tmp / name).unlink(missing_ok=True)
            os.rename(tmp, out)
            return
        if out.is_symlink() or not out.is_dir():
            raise StorageError(f"--out {out} is no longer a folder; every run is kept in the store, rerun with a "
                               "folder as --out")
        owner, ours, _ = recorded_unchanged(out)
        if not _mine(out, owner, ours, identity, former, device) and not overwrite and _has_content(out):
            raise StorageError(f"--out {out} got another experiment's results (or other files) while this one ran; "
                               "every run is kept in the store, rerun with another --out or --overwrite")
        _, incoming = read_record(tmp)
        _check_places(out, incoming, ours, overwrite)
        outgoing = [rel for rel in incoming if os.path.lexists(out / rel)]
        outgoing += [rel for rel in ours if rel not in incoming]
        swap_files(tmp, out, incoming, outgoing, _new_folder(out, "old", tmp.parent), RECORD)


def _check_places(out: Path, incoming: Collection[str], ours: dict[str, str], overwrite: bool) -> None:
    """A new output replaces memprox's own file, any file with --overwrite, never a folder or link. Every
    blocker is named at once: naming the first alone (a file `figures`) failed the rerun on the next one."""
    def folder(path: Path) -> Path | None:
        return path if path.is_dir() and not path.is_symlink() else None
    blockers = dict.fromkeys(b for rel in incoming if (b := blocked_by(out, rel) or folder(out / rel)))
    if blockers:
        raise StorageError(f"cannot write outputs into --out {out}; in the way: {', '.join(map(str, blockers))}; "
                           "move each away and rerun (every run is kept in the store)")
    theirs = [rel for rel in incoming if os.path.lexists(out / rel) and rel not in ours]
    if theirs and not overwrite:
        raise StorageError(f"--out {out}; not written by memprox (or changed since): {', '.join(theirs)}; move each "
                           "away, or rerun with --overwrite to replace them (every run is kept in the store)")
