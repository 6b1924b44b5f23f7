"""The output folder (`--out`): checked before anything trains, written to a staging folder beside
it, and published into it at the end with rollback, so an interrupted experiment never leaves half
an output folder and a folder never mixes two experiments.

The folder's own record (`.memprox-outputs.json`: each file with its checksum) says what memprox
wrote there: only those files, unchanged since, are ever replaced or removed, so a user's files, a
repository or the store beside them are never touched. What killed experiments leave beside the
folder (a staging folder, a swap of outputs part-way) is settled by the next one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch

from harness.config import ExperimentConfig
from harness.errors import HarnessError, StorageError
from harness.evaluation import ExperimentResult
from harness.io import (
    JOURNAL,
    atomic_write,
    atomic_write_text,
    blocked_by,
    exclusive,
    file_sha256,
    folder_beside,
    free_bytes_short,
    is_plain_relpath,
    leftovers,
    pid_alive,
    plain_file,
    probe_writable,
    recover_swap,
    regular_files,
    rmtree,
    swap_files,
)
from harness.leaderboard import markdown
from harness.runspec import RunSpec
from harness.store import StoredRun

#: The output folder's own record of what memprox wrote into it: {"experiment": id, "publish": nonce,
#: "files": {relative path: SHA-256}}. Only files listed there, and unchanged since, are ever removed.
RECORD = ".memprox-outputs.json"
#: Written into a staging folder when it is made: proof that a stale one is memprox's to remove.
STAGING_MARKER = ".memprox-staging"
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
    if not isinstance(files, dict) or not isinstance(data.get("experiment"), str):
        return None, {}
    if not all(is_plain_relpath(rel) and isinstance(sha, str) and _SHA256.fullmatch(sha) for rel, sha in files.items()):
        return None, {}
    return data["experiment"], files


def _ours(out: Path) -> tuple[str | None, dict[str, str], list[str]]:
    """(owner, recorded files still exactly as memprox wrote them, recorded files changed since).
    A changed file is the user's now: it is never removed, and replaced only with --overwrite."""
    owner, files = read_record(out)
    ours, changed = {}, []
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


def _out_lock(out: Path) -> AbstractContextManager[None]:
    """Serialises publishing into `out` between processes. Its file lives beside `out`, like the
    staging folders, because `out` may not exist yet; it is removed on release."""
    return exclusive(out.parent / f".{out.name}.memprox-lock")


def check_out(out: Path, identity: str, overwrite: bool, store: Path) -> None:
    """Before training: --out must be a writable folder apart from the run store, holding no other
    experiment's results, no files memprox cannot show it wrote, and none changed since it wrote
    them, unless --overwrite (which replaces only files a new output has the name of)."""
    out, store = Path(out).resolve(), Path(store).resolve()
    if out == store or store in out.parents or out in store.parents:
        where = "is" if out == store else "is inside" if store in out.parents else "contains"
        raise HarnessError(f"--out {out} {where} the run store {store}; pass an --out outside the store that does "
                           "not contain it")
    if out == out.parent:
        raise HarnessError(f"--out {out} is the file system root; pass a folder")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file, not a folder; pass a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for folder in (out.parent, out) if out.exists() else (out.parent,):
            probe_writable(folder)
    except OSError as e:
        raise HarnessError(f"output folder {out} is not writable ({e.strerror}); pass a writable --out") from e
    free = free_bytes_short(out.parent)
    if free is not None:
        raise HarnessError(f"output folder {out} has only {free / 2**20:.0f} MiB free; free some space or pass "
                           "another --out")
    if _stale(out):
        with _out_lock(out):
            clean_stale(out)
    if overwrite or not out.exists():
        return
    try:
        owner, _, changed = _ours(out)
        empty = not any(out.iterdir())
    except OSError as e:
        raise HarnessError(f"--out {out} cannot be read ({e.strerror}); pass a readable --out") from e
    if owner != identity and not empty:
        raise HarnessError(f"--out {out} holds results of another experiment (or files memprox cannot show it "
                           "wrote); pass another --out, or --overwrite to replace the outputs there (other files "
                           "are kept)")
    if changed:
        raise HarnessError(f"--out {out}: {changed[0]} was changed after memprox wrote it; move it away, or pass "
                           "--overwrite to replace it")


@contextmanager
def staging(out: Path | None) -> Iterator[Path | None]:
    """A temporary folder beside --out, marked as memprox's when made, that the outputs are written
    to and published from (None without --out)."""
    if out is None:
        yield None
        return
    out = Path(out).resolve()
    try:
        tmp = _beside(out, "tmp")
        (tmp / STAGING_MARKER).write_text("memprox staging folder of an experiment's outputs\n")
    except OSError as e:
        raise StorageError(f"cannot write outputs beside {out} ({e.strerror}); every run is kept in the store, "
                           "rerun once the folder is writable") from e
    try:
        yield tmp
    finally:
        rmtree(tmp)


def _beside(out: Path, kind: str) -> Path:
    """A new folder `.NAME.KIND-PID-RANDOM` beside `out` (same file system, so renames are atomic)."""
    return folder_beside(out.parent, f".{out.name}.{kind}-{os.getpid()}-")


def write(result: ExperimentResult, runs: dict[RunSpec, StoredRun], tmp: Path, artifacts: dict[str, list[str]],
          cfg: ExperimentConfig, identity: str, device: torch.device, phases: Callable[[], dict[str, float]]) -> None:
    """Write every output into the staging folder `tmp` (scores, raw rows, leaderboard, summary, the
    record) and publish them into --out. StorageError when the file system refuses."""
    out = Path(cfg.out).resolve()
    try:
        for name, frame in result.scores.items():
            path = f"scores/{name}.csv"
            atomic_write(tmp / path, lambda p, f=frame: f.to_csv(p, index=False))
            result.outputs.setdefault("scores", []).append(path)  # type: ignore[union-attr]
        atomic_write(tmp / "raw.csv", lambda p: result.raw.to_csv(p, index=False))
        atomic_write(tmp / "leaderboard.csv", lambda p: result.leaderboard.to_csv(p, index=False))
        atomic_write_text(tmp / "leaderboard.md", markdown(result.leaderboard))
        result.outputs.update(artifacts)
        text = json.dumps(summary(result, runs, cfg, identity, device, phases()), indent=1, default=str)
        atomic_write_text(tmp / "summary.json", text)  # its write phase ends above (summary and record follow)
        write_record(tmp, identity)
        publish(tmp, out, identity, cfg.overwrite)
    except OSError as e:
        raise StorageError(f"cannot write outputs to {e.filename or out} ({e.strerror or e}); every run is kept "
                           "in the store, rerun once the folder is writable") from e


def summary(result: ExperimentResult, runs: dict[RunSpec, StoredRun], cfg: ExperimentConfig, identity: str,
            device: torch.device, phase_seconds: dict[str, float]) -> dict:
    """summary.json: the experiment, its config, every run it used, what failed, and its outputs."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items() if k != "recipe"}
    return {
        "experiment": identity,
        "config": config | {"recipe": vars(cfg.recipe)},
        "device": str(device),
        "runs": [{"label": r.manifest.label, "hash": r.manifest.spec_hash, "engine": r.manifest.engine,
                  "threads": r.manifest.threads, "train_acc": r.manifest.train_acc,
                  "test_acc": r.manifest.test_acc, "train_seconds": r.manifest.train_seconds,
                  **({"flipped_fit": result.flipped_fit[r.manifest.spec_hash]}
                     if r.manifest.spec_hash in result.flipped_fit else {})}
                 for r in runs.values()],
        "trained": result.trained,
        "reused": result.reused,
        "failures": result.failures,
        "outputs": {"leaderboard": "leaderboard.csv", "raw": "raw.csv", "markdown": "leaderboard.md",
                    **result.outputs},
        "phase_seconds": phase_seconds,  # write: up to this summary (it and the publish take ms)
    }


def write_record(tmp: Path, identity: str) -> None:
    """Record every file written into `tmp` with its checksum. The nonce makes each publish's record
    unique, so after a kill part-way a committed swap can be told from one that was not."""
    files = {rel: file_sha256(tmp / rel) for rel in regular_files(tmp, skip=(STAGING_MARKER, RECORD))}
    hidden = [rel for rel in files if not is_plain_relpath(rel)]
    if hidden:  # a record naming them would not be trusted (it could name .git/...): a bug, not bad input
        raise RuntimeError(f"outputs with hidden names cannot be recorded: {', '.join(hidden)}")
    record = {"experiment": identity, "publish": os.urandom(8).hex(), "files": files}
    atomic_write_text(tmp / RECORD, json.dumps(record, indent=1))


def publish(tmp: Path, out: Path, identity: str, overwrite: bool) -> None:
    """Move the complete outputs in `tmp` (with their record) into `out`, under the folder's lock.
    A folder that does not exist is the staging folder renamed. Into an existing one the new files
    are swapped in with rollback (`harness.io.swap_files`); set aside, and deleted once the new set
    is in, are only memprox's own earlier outputs (recorded, unchanged) and, with --overwrite, files
    a new output has the name of. Every other file and folder stays."""
    with _out_lock(out):
        clean_stale(out)
        if not os.path.lexists(out):
            (tmp / STAGING_MARKER).unlink()
            os.rename(tmp, out)
            return
        if out.is_symlink() or not out.is_dir():
            raise StorageError(f"--out {out} is no longer a folder; every run is kept in the store, rerun with a "
                               "folder as --out")
        owner, ours, _ = _ours(out)
        if owner != identity and not overwrite and any(out.iterdir()):
            raise StorageError(f"--out {out} got another experiment's results (or other files) while this one ran; "
                               "every run is kept in the store, rerun with another --out or --overwrite")
        _, incoming = read_record(tmp)
        for rel in incoming:
            _check_place(out, rel, ours, overwrite)
        outgoing = [rel for rel in incoming if os.path.lexists(out / rel)]
        outgoing += [rel for rel in ours if rel not in incoming]
        swap_files(tmp, out, incoming, outgoing, _beside(out, "old"), RECORD)


def _check_place(out: Path, rel: str, ours: dict[str, str], overwrite: bool) -> None:
    """A new output may take the place of memprox's own file, of any file with --overwrite, but
    never of a folder or a link on the way (those are never removed)."""
    target = out / rel
    blocker = blocked_by(out, rel)
    if blocker is None and target.is_dir() and not target.is_symlink():
        blocker = target
    if blocker is not None:
        raise StorageError(f"cannot write {rel} into --out {out}: {blocker} is in the way; move it away and rerun "
                           "(every run is kept in the store)")
    if os.path.lexists(target) and rel not in ours and not overwrite:
        raise StorageError(f"--out {out}: {rel} was not written by memprox (or was changed since); move it away, or "
                           "rerun with --overwrite to replace it (every run is kept in the store)")


def _stale(out: Path) -> list[tuple[re.Match[str], Path]]:
    """Staging ("tmp") and set-aside ("old") folders beside `out` that killed processes left: the
    name pattern, a dead owner process, and the marker or journal written inside on creation."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-(\d+)(?:-|$)")

    def owned(m: re.Match[str], folder: Path) -> bool:
        return not pid_alive(int(m.group(2))) and plain_file(folder, STAGING_MARKER if m.group(1) == "tmp"
                                                              else JOURNAL) is not None

    return leftovers(out.parent, pattern, owned)


def clean_stale(out: Path) -> None:
    """Settle what killed experiments left beside --out (call under the folder's lock): a staging
    folder is removed, a swap of outputs is finished or rolled back (`harness.io.recover_swap`).
    A folder that merely has the name is never touched."""
    for m, folder in _stale(out):
        if m.group(1) == "tmp":
            rmtree(folder)
        else:
            recover_swap(folder, out)
