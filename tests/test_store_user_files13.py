"""A run that rewrites a store entry (new recorders added, a damaged entry recomputed) swapped the
whole folder and removed the old one, a user's notes inside with it, although `store prune` keeps
such an entry ("files that are not the store's own"). The user's files now move into the new entry;
one the new entry would overwrite keeps the old folder aside, with a warning."""

from __future__ import annotations

import numpy as np
import pytest

from harness.jobs import make_manifest
from harness.store import RunStore
from harness.store_entry_files import foreign_names
from harness.training import RunOutput


def _put(store: RunStore, spec, keys: tuple[str, ...] = ("train_loss",), value: float = 0.5):
    arrays = {key: {"loss": np.full((3, 5), value, dtype=np.float32)} for key in keys}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={k: 0.0 for k in keys},
                    recorder_flops={k: 0 for k in keys}, train_acc=value, test_acc=0.5, history=[])
    return store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))


def test_a_users_files_move_into_the_rewritten_entry(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    entry = _put(store, base_spec).path
    (entry / "mine.txt").write_text("my notes\n")
    (entry / "plots").mkdir()
    (entry / "plots" / "a.png").write_bytes(b"png")
    assert foreign_names(entry) == ["mine.txt", "plots"]
    again = _put(store, base_spec, keys=("train_loss", "train_margin")).path  # a run adding a recorder
    assert again == entry and (entry / "mine.txt").read_text() == "my notes\n"
    assert (entry / "plots" / "a.png").read_bytes() == b"png"
    assert (entry / "train_margin.loss.npy").is_file() and store.get(base_spec) is not None
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no old folder left


def test_a_damaged_entry_recomputed_keeps_the_users_files(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    entry = _put(store, base_spec).path
    (entry / "mine.txt").write_text("keep\n")
    (entry / "manifest.json").write_text("u")  # damaged: its arrays are unnamed, only .npy files are the store's
    assert foreign_names(entry) == ["mine.txt"]
    _put(store, base_spec, value=0.25)
    assert (entry / "mine.txt").read_text() == "keep\n" and store.get(base_spec).manifest.train_acc == 0.25


def test_a_users_file_the_new_entry_would_overwrite_keeps_the_old_folder(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    entry = _put(store, base_spec).path
    (entry / "train_margin.loss.npy").write_bytes(b"the user's own")  # named by no manifest: not the store's
    with pytest.warns(UserWarning, match=r"train_margin\.loss\.npy in it, which memprox did not write, would be "
                                         r"overwritten: the old folder is kept as .*\.old-"):
        _put(store, base_spec, keys=("train_loss", "train_margin"))
    aside = [p for p in entry.parent.iterdir() if p.name.startswith(".old-")]
    assert len(aside) == 1 and (aside[0] / "train_margin.loss.npy").read_bytes() == b"the user's own"
    assert store.get(base_spec) is not None
    store.clean()  # a user's file inside: never the store's to remove
    assert (aside[0] / "train_margin.loss.npy").read_bytes() == b"the user's own"
