"""Three gaps of `memprox store info` / `store prune`, closed: a live writer's files were counted as
leftovers of killed processes (and offered to `prune --leftovers`); a store whose runs/ is a link (big
runs on another disk) was refused; a temporary checkpoint a killed run left was listed as a leftover
that `prune --leftovers` then never removed (exit 1) while its run was not stored.

A writer is stood in for as it works: it holds its entry's lock (`locks/<hash>.lock`, the `filelock`
package, here in a child process as the writer is one) for the whole run, while its temporary entry
folder (`runs/.tmp-<hash>-...`), its checkpoint and the checkpoint's temporary file are on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import harness.store_admin as admin
import harness.store_scan as store_scan
from harness.cli import main
from harness.jobs import make_manifest
from harness.runspec import RunSpec
from harness.store import RunStore
from harness.training import RunOutput

KEYS = ["train_loss"]


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _output() -> RunOutput:
    arrays = {"train_loss": {"loss": np.random.default_rng(0).random((3, 5), dtype=np.float32)}}
    return RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1},
                     recorder_flops={"train_loss": 0}, train_acc=0.5, test_acc=0.5, history=[])


def _stored(root: Path, spec: RunSpec) -> RunStore:
    store = RunStore(root)
    out = _output()
    store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))
    return store


@contextmanager
def _held(lock: Path) -> Iterator[None]:
    """The lock held by another process, as a writer holds it while it trains and stores its run."""
    code = ("import sys; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait()


def _writers_files(store: RunStore, spec: RunSpec) -> list[Path]:
    """What a live writer of `spec` has on disk mid-run: its checkpoint, the temporary file of the next
    one, and (storing) its temporary entry folder with an array written and no manifest yet."""
    digest = spec.digest()
    store.save_checkpoint(spec, {"epoch": 1, "w": np.arange(3.0)}, KEYS)
    temp_ckpt = store.root / "partial" / f".{digest}.pt.k2j4h5"
    temp_ckpt.write_bytes(b"PK\x03\x04 half a checkpoint")
    entry = store.root / "runs" / f".tmp-{digest}-a1b2c3d4"
    entry.mkdir()
    np.save(entry / "train_loss.loss.npy", np.zeros(4, np.float32))
    return [store.checkpoint_path(spec), temp_ckpt, entry]


def _size(paths: list[Path]) -> int:
    return sum(admin.tree_bytes(p) for p in paths)


@pytest.fixture
def writing(tmp_path, base_spec) -> tuple[Path, RunSpec, list[Path]]:
    """A store holding one complete entry, and a live writer's files for another spec (lock not yet held)."""
    store = _stored(tmp_path / "store", base_spec)
    other = RunSpec(data=base_spec.data, model=base_spec.model, recipe=base_spec.recipe, seed=7)
    return store.root, other, _writers_files(store, other)


def test_info_counts_a_live_writers_files_as_in_use_not_as_leftovers_or_checkpoints(writing, capsys) -> None:
    root, spec, files = writing
    with _held(root / "locks" / f"{spec.digest()}.lock"):
        code, out, _ = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0
    assert "partial checkpoints: 0, 0 bytes" in out
    assert "leftovers of killed processes: 0, 0 bytes" in out and "prune --leftovers" not in out
    assert f"in use by a running experiment or prune: 3, {_size(files)} bytes" in out
    code, out, _ = _cli(capsys, "store", "info", "--store", str(root))  # the writer gone: now they are leftovers
    assert "partial checkpoints: 1," in out and "in use by" not in out
    assert f"leftovers of killed processes: 2, {_size(files[1:])} bytes" in out


def test_a_file_the_writer_made_after_the_leftovers_were_listed_is_in_use_not_someone_elses(writing, capsys,
                                                                                            monkeypatch) -> None:
    root, spec, files = writing
    monkeypatch.setattr(store_scan, "store_leftovers", lambda root: [])  # listed before the writer made them
    with _held(root / "locks" / f"{spec.digest()}.lock"):
        code, out, _ = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0 and "other files in runs/ and partial/ (not the store's, never touched): 0, 0 bytes" in out
    assert f"in use by a running experiment or prune: 3, {_size(files)} bytes" in out


def test_prune_never_touches_a_live_writers_files_and_its_dry_run_does_not_count_them(writing, capsys) -> None:
    root, spec, files = writing
    with _held(root / "locks" / f"{spec.digest()}.lock"):
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers", "--dry-run")
        assert code == 0 and "would remove 0, freeing 0 bytes" in out
        assert f"would skip (in use by a running experiment or prune) {files[1].relative_to(root)}" in out
        code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--partial", "--dry-run")
        assert code == 0 and "would remove 0, freeing 0 bytes" in out
        for flags in (["--leftovers"], ["--partial"], ["--all"]):
            code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), *flags)
            assert code == 0, out
            assert all(os.path.lexists(p) for p in files), (flags, out)
    assert not any(admin.DIGEST.fullmatch(p.name) for p in (root / "runs").iterdir())  # --all: the complete entry


def test_prune_leftovers_removes_a_killed_runs_temporary_checkpoint_though_its_run_is_not_stored(writing,
                                                                                                capsys) -> None:
    """The cleanup kept a temporary checkpoint until its run was stored (it checked it as a checkpoint a
    resume reads), so `--leftovers` listed it and then said it could not be removed (exit 1)."""
    root, _, files = writing
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and "removed 2 of 2 leftovers" in out, out
    assert files[0].is_file() and not os.path.lexists(files[1]) and not os.path.lexists(files[2])


def test_held_reads_the_lock_without_making_or_writing_anything(tmp_path) -> None:
    (tmp_path / "locks").mkdir()
    assert admin.held(tmp_path, "a" * 20) is False and list((tmp_path / "locks").iterdir()) == []
    lock = tmp_path / "locks" / f"{'b' * 20}.lock"
    lock.touch()
    before = lock.stat()
    with _held(lock):
        assert admin.held(tmp_path, "b" * 20) is True
    assert admin.held(tmp_path, "b" * 20) is False
    assert lock.stat().st_mtime_ns == before.st_mtime_ns and lock.stat().st_size == 0


def test_a_store_without_partial_lists_and_prunes_its_leftovers(tmp_path, base_spec, capsys) -> None:
    """A store whose partial/ is gone (removed by hand, or copied without it): its runs/ leftovers were
    counted as someone else's files, and `prune --leftovers` ended in a traceback listing partial/."""
    root = _stored(tmp_path / "store", base_spec).root
    shutil.rmtree(root / "partial")
    left = root / "runs" / f".tmp-{base_spec.digest()}-deadbeef"
    left.mkdir()
    np.save(left / "train_loss.loss.npy", np.zeros(2))
    code, out, _ = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0 and f"leftovers of killed processes: 1, {admin.tree_bytes(left)} bytes" in out
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and "removed 1 of 1 leftovers" in out and not left.exists()
    assert not (root / "partial").exists() and (root / "runs" / base_spec.digest()).is_dir()


def test_a_writers_file_gone_as_it_let_go_of_its_lock_is_not_a_leftover(writing, capsys, monkeypatch) -> None:
    """The writer finishes between the listing and the look at its lock: its files are gone, the lock free.
    They were counted as leftovers of killed processes, with their bytes."""
    root, _, files = writing

    def finished(root: Path, digest: str) -> bool:
        shutil.rmtree(files[2], ignore_errors=True)
        files[1].unlink(missing_ok=True)
        return False

    for module in (admin, store_scan):  # scan's lookup, and store_report's `admin.held`
        monkeypatch.setattr(module, "held", finished)
    code, out, _ = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0 and "leftovers of killed processes: 0, 0 bytes" in out
    assert "other files in runs/ and partial/ (not the store's, never touched): 0, 0 bytes" in out


def test_a_leftover_another_cleaner_removed_after_the_listing_is_not_reported_removed_twice(writing, capsys,
                                                                                           monkeypatch) -> None:
    """Two `prune --leftovers` at once (or one and a run starting): both listed a leftover, one removed it,
    the other then took its free lock and reported it removed too (866 lines for 800 leftovers, the bytes
    counted twice)."""
    import harness.store as store_mod

    root, _, files = writing
    real = store_mod._swaps_left

    def listed_then_removed_by_another(root: Path) -> list:
        found = real(root)
        for _, path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return found

    monkeypatch.setattr(store_mod, "_swaps_left", listed_then_removed_by_another)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and "removed 0 of 2 leftovers, freed 0 bytes" in out and "removed .tmp" not in out


def test_an_entry_a_prune_removes_while_info_reads_it_is_not_reported_damaged(tmp_path, base_spec, capsys,
                                                                              monkeypatch) -> None:
    """`store info` beside a `prune --all` of 534 entries said `foreign entries: 1` (once in 6932 looks): an
    entry renamed aside by the prune as info read it was reported as a link or file named as an entry, or damaged."""
    root = _stored(tmp_path / "store", base_spec).root
    real = admin.verify_entry

    def pruned_as_read(path: Path, digest: str):
        os.rename(path, path.parent / f".tmp-{digest}-prune1-deadbeef")  # as prune renames it aside
        return real(path, digest)

    monkeypatch.setattr(store_scan, "verify_entry", pruned_as_read)  # where read_entry looks it up
    code, out, _ = _cli(capsys, "store", "info", "--store", str(root))
    assert code == 0 and "complete entries: 0, 0 bytes" in out
    assert "damaged entries" not in out and "foreign entries" not in out


def test_prune_leftovers_retries_a_leftover_whose_lock_was_probed_just_then(writing, capsys, monkeypatch) -> None:
    """`store info` probes each leftover's lock (a shared flock, held for an instant): a `prune --leftovers`
    whose cleanup tried that lock in that instant skipped the leftover, found the lock free after, and said
    it `could not be removed` (exit 1)."""
    import harness.store as store_mod

    root, _, files = writing
    real, calls = store_mod.RunStore.clean, []

    def probed_at_first(self: RunStore) -> list[str]:
        calls.append(1)
        return [] if len(calls) == 1 else real(self)  # first: every lock taken by a probe at that instant

    monkeypatch.setattr(store_mod.RunStore, "clean", probed_at_first)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and "removed 2 of 2 leftovers" in out and "could not be removed" not in out
    assert not os.path.lexists(files[1]) and not os.path.lexists(files[2])


def test_an_entry_put_back_by_another_prune_at_once_is_not_said_put_back_twice(tmp_path, base_spec, capsys,
                                                                               monkeypatch) -> None:
    """An entry a kill left set aside mid-swap (`runs/.old-<hash>-PID`): two `prune --leftovers` at once each
    said `put back runs/<hash>`, the one that listed it and found it back at its name as well."""
    import harness.store as store_mod

    root = _stored(tmp_path / "store", base_spec).root
    entry = root / "runs" / base_spec.digest()
    os.rename(entry, root / "runs" / f".old-{base_spec.digest()}-99999")
    real = store_mod._swaps_left

    def listed_then_put_back_by_another(root: Path) -> list:
        found = real(root)
        for _, path in found:
            os.rename(path, entry)
        return found

    monkeypatch.setattr(store_mod, "_swaps_left", listed_then_put_back_by_another)
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and "put back" not in out and "removed 0 of 0 leftovers" in out
    monkeypatch.undo()
    os.rename(entry, root / "runs" / f".old-{base_spec.digest()}-99999")
    code, out, _ = _cli(capsys, "store", "prune", "--store", str(root), "--leftovers")
    assert code == 0 and f"put back runs/{base_spec.digest()} (an entry a kill left mid-swap)" in out
    assert "removed .old" not in out and admin.read_entry(entry).status == "complete"
