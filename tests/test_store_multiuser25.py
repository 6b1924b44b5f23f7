"""A run store shared by several Unix users (a group's folder, setgid, every member under umask 002
or 007), as tried with two real users (multiuser25):

- each new entry folder lost the setgid bit it got from runs/ (`folder_beside` set its mode with a
  chmod that dropped it), so its files took their writer's own group: under umask 007 no other
  member could read them ("run store entry ... cannot be read");
- a member's prune of an entry whose folder another member owns and it may not write (written
  under umask 022) renamed it aside (runs/ is group-writable) and then could not delete its files:
  the run was gone from its address, left at `runs/.tmp-<hash>-prune...` for its owner to delete.
  It now stays whole at its name, with one line saying whose it is and the fix (exit 1);
- a member re-reading a damaged entry under its lock, whose lock file another member made under
  umask 022 (0644), ended in a traceback (PermissionError); it is now the one line the runner gives
  for such a lock, naming the file and the fix, before anything trains;
- a member who made runs/ and then upgraded (stored again, with more signals) an entry another member
  had written under umask 022 could not delete the old entry set aside, and the clean-up's retry made
  the folder it was in, runs/, 0700: the whole group lost the store. runs/ now keeps its mode (the
  old entry stays set aside, a leftover its owner's next run removes);
- an entry another member wrote under umask 077 was refused with "fix the permissions of it or
  remove it", which its reader may do neither of: the line now names whose it is and that user's fix.

The second user is stood in for by this (root) process taking another uid as its effective one
(`os.seteuid`), so the kernel checks that user's permissions; without root the test skips.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import HarnessError, StorageError
from harness.jobs import make_manifest
from harness.runspec import RunSpec
from harness.store import RunStore
from harness.training import RunOutput

NOBODY = 65534  # a uid that is not ours: the other member


def _stored(root: Path, spec: RunSpec, seed: int = 0) -> RunStore:
    store = RunStore(root)
    arrays = {"train_loss": {"loss": np.random.default_rng(seed).random((3, 5), dtype=np.float32)}}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1},
                    recorder_flops={"train_loss": 0}, train_acc=0.5, test_acc=0.5, history=[])
    store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))
    return store


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def _as_user(uid: int) -> Iterator[None]:
    """This process with `uid` as its effective user (root keeps its real uid, so it can come back)."""
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


@contextmanager
def _reachable_folder() -> Iterator[Path]:
    """A new folder under the system's temporary folder that every user may reach (pytest's own is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="memprox-multiuser25-"))
    try:
        os.chmod(base, 0o755)
        yield base
    finally:
        shutil.rmtree(base)


def test_an_entry_in_a_setgid_store_keeps_the_bit_so_its_files_take_the_stores_group(tmp_path, base_spec) -> None:
    root = tmp_path / "team-store"
    root.mkdir()
    if os.geteuid() == 0:  # a group not the writer's own, as a team's group is
        os.chown(root, -1, NOBODY)
    os.chmod(root, 0o2770)
    if not os.stat(root).st_mode & stat.S_ISGID:
        pytest.skip("this file system (or group) does not keep the setgid bit on a folder")
    group = os.stat(root).st_gid
    with _umask(0o007):
        store = _stored(root, base_spec)
    entry = store.entry_dir(base_spec)
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o2770  # was 0o770: the bit dropped
    assert {p.name: p.stat().st_gid for p in entry.iterdir()} == {p.name: group for p in entry.iterdir()}
    assert {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()} == {0o660}


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root")
def test_a_members_prune_of_an_entry_it_may_not_empty_leaves_it_whole_at_its_name(base_spec, capsys) -> None:
    with _reachable_folder() as base:
        root = base / "store"
        with _umask(0o022):  # the owner (root here) wrote it under the usual umask: 0755 folder, 0644 files
            store = _stored(root, base_spec)
        for sub in ("runs", "partial", "locks"):  # the store's folders writable for the group (here: everyone)
            os.chmod(root / sub, 0o777)
        for lock in (root / "locks").iterdir():
            os.chmod(lock, 0o666)
        entry = store.entry_dir(base_spec)
        before = {p.name: p.read_bytes() for p in entry.iterdir()}
        assert main(["store", "prune", "--all", "--dry-run", "--store", str(root)]) == 0  # loads what prune uses
        capsys.readouterr()
        with _as_user(NOBODY):
            code = main(["store", "prune", "--all", "--store", str(root)])
        out, err = capsys.readouterr()
        assert code == 1
        assert sorted(os.listdir(root / "runs")) == [entry.name]  # no runs/.tmp-<hash>-prune... left
        assert {p.name: p.read_bytes() for p in entry.iterdir()} == before
        assert RunStore(root).get(base_spec) is not None
        line = f"skipped runs/{entry.name}  {base_spec.label()}: cannot be removed (Permission denied: its " \
               "folder is root's and not writable for you, so root prunes it;"
        assert line in out
        assert "removed 0 of 1 selected, freed 0 bytes; 1 skipped" in out
        assert "Traceback" not in out + err


def test_rereading_a_damaged_entry_under_a_lock_file_we_may_not_open_is_one_line(base_spec) -> None:
    with _reachable_folder() as base:
        root = base / "store"
        with _umask(0o022):  # the other member's lock file: 0644
            store = _stored(root, base_spec)
        for sub in ("runs", "partial", "locks"):
            os.chmod(root / sub, 0o777)
        entry = store.entry_dir(base_spec)
        npy = next(entry.glob("*.npy"))
        with open(npy, "ab") as f:  # damaged: the reader checks it again under the entry's lock
            f.write(b"x")
        before = {p.name: p.read_bytes() for p in entry.iterdir()}
        lock = root / "locks" / f"{base_spec.digest()}.lock"
        assert lock.is_file()
        if os.geteuid() != 0:  # our own lock file made unwritable: the same refusal, as an ordinary user
            os.chmod(lock, 0o444)
        with _as_user(NOBODY) if os.geteuid() == 0 else nullcontext(), pytest.raises(StorageError) as got:
            RunStore(root).get(base_spec)
        assert str(got.value) == (f"cannot lock a run's entry at {lock} (Permission denied); make it writable for "
                                  "you (a store shared by a group: chmod -R g+w on its locks folder, and umask 002 "
                                  "for every member), and rerun: every stored run is kept")
        assert {p.name: p.read_bytes() for p in entry.iterdir()} == before


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root")
def test_storing_over_another_members_entry_leaves_the_groups_runs_folder_as_it_was(base_spec) -> None:
    with _reachable_folder() as base:
        root = base / "store"
        with _umask(0o022):  # the other member (root here) wrote it under the usual umask: 0755, files 0644
            _stored(root, base_spec)
        entry = root / "runs" / base_spec.digest()
        for folder in (root, root / "runs", root / "partial", root / "locks", *(root / "locks").iterdir()):
            os.chown(folder, NOBODY, -1)  # this member made the store and its folders
        os.chmod(root / "runs", 0o2775)
        with _as_user(NOBODY), _umask(0o002):
            _stored(root, base_spec, seed=1)  # stored again, as an upgrade stores it
        assert stat.S_IMODE(os.stat(root / "runs").st_mode) == 0o2775  # was 0o700: nobody else could read it
        assert os.stat(entry).st_uid == NOBODY
        got = RunStore(root).get(base_spec)
        assert got is not None
        expected = np.random.default_rng(1).random((3, 5), dtype=np.float32)
        np.testing.assert_array_equal(got.arrays("train_loss")["loss"], expected)
        aside = [p.name for p in (root / "runs").iterdir() if p.name != entry.name]
        assert [name.startswith(f".old-{entry.name}-") for name in aside] == [True]  # the owner's to remove


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root")
def test_an_entry_another_member_keeps_private_is_refused_naming_whose_it_is(base_spec) -> None:
    with _reachable_folder() as base:
        root = base / "store"
        with _umask(0o022):
            store = _stored(root, base_spec)
        entry = store.entry_dir(base_spec)
        os.chmod(entry, 0o700)  # written under umask 077 by its owner (root here)
        with _as_user(NOBODY), pytest.raises(HarnessError) as got:
            RunStore(root).get(base_spec)
        assert str(got.value) == (f"run store entry {entry} cannot be read (Permission denied on {entry}/manifest.json)"
                                  "; it is root's: root makes it readable for you (in a store a group shares: chmod -R "
                                  "g+rX on it, and umask 002 or 007 for every member), or pass another --store")
        assert RunStore(root).get(base_spec) is not None  # its owner still reads it
