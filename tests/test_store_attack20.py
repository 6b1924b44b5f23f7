"""The run store attacked as a crashing machine would: what an interrupted run leaves must be what the
rerun resumes from, never cleaned away as a leftover."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

import harness.outputs as outputs
import harness.outputs_place as outputs_place
import harness.store as store_mod
import harness.store_admin as admin
import harness.training as training
from harness.errors import HarnessError, StorageError
from harness.experiment import Experiment
from harness.jobs import make_manifest
from harness.runspec import RunSpec
from harness.store import RunStore
from harness.training import RunOutput, train_run


def _output() -> RunOutput:
    rng = np.random.default_rng(0)
    arrays = {"train_loss": {"loss": rng.random((3, 5), dtype=np.float32)},
              "train_prob": {"p_label": rng.random((3, 5), dtype=np.float32)}}
    return RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1,
                     "train_prob": 0.1}, recorder_flops={"train_loss": 0, "train_prob": 0}, train_acc=0.5,
                     test_acc=0.5, history=[])


def _stored_with_checkpoint(tmp_path, spec: RunSpec, keys: list[str]) -> RunStore:
    store = RunStore(tmp_path / "store")
    out = _output()
    store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))
    store.save_checkpoint(spec, {"epoch": 3, "w": np.arange(4.0)}, keys)
    return store


def test_the_checkpoint_of_a_run_recorded_again_with_more_signals_survives_the_cleanup(tmp_path, base_spec) -> None:
    keys = ["train_loss", "train_margin", "train_prob"]  # the stored entry lacks train_margin: an upgrade
    store = _stored_with_checkpoint(tmp_path, base_spec, keys)
    assert store.clean() == []
    state = store.load_checkpoint(base_spec, keys)
    assert state is not None and state["epoch"] == 3
    found = admin.scan(store.root)
    assert [i.name for i in found.checkpoints] == [f"partial/{base_spec.digest()}.pt"] and found.leftovers == []


def test_the_checkpoint_of_a_damaged_entry_being_recomputed_survives_the_cleanup(tmp_path, base_spec) -> None:
    keys = ["train_loss", "train_prob"]
    store = _stored_with_checkpoint(tmp_path, base_spec, keys)
    np.save(store.root / "runs" / base_spec.digest() / "train_loss.loss.npy", np.zeros((3, 5), np.float32))
    assert store.clean() == []
    state = store.load_checkpoint(base_spec, keys)
    assert state is not None and state["epoch"] == 3


@pytest.mark.parametrize("keys", [["train_loss", "train_prob"], ["train_loss"]])
def test_the_checkpoint_of_a_run_its_entry_holds_is_still_a_leftover(tmp_path, base_spec, keys) -> None:
    store = _stored_with_checkpoint(tmp_path, base_spec, keys)
    assert store.clean() == [f"{base_spec.digest()}.pt"]
    assert not store.checkpoint_path(base_spec).exists()


def test_a_torn_checkpoint_of_a_complete_entry_is_a_leftover(tmp_path, base_spec) -> None:
    store = _stored_with_checkpoint(tmp_path, base_spec, ["train_loss", "train_margin", "train_prob"])
    path = store.checkpoint_path(base_spec)
    path.write_bytes(path.read_bytes()[:100])
    assert store.clean() == [path.name]


class _Interrupt:
    """A checkpoint callback that saves through the store, then stops the run after epoch `k` (Ctrl-C)."""

    def __init__(self, store: RunStore, spec: RunSpec, keys: list[str], k: int) -> None:
        self.store, self.spec, self.keys, self.k = store, spec, keys, k

    def __call__(self, state: dict) -> None:
        self.store.save_checkpoint(self.spec, state, self.keys)
        if state["epoch"] == self.k:
            raise KeyboardInterrupt


def test_an_interrupted_upgrade_resumes_from_its_checkpoint(make_config, monkeypatch) -> None:
    Experiment(make_config(epochs=4, proxies="final_loss")).run()
    cfg = make_config(epochs=4, proxies="final_loss,forgetting", overwrite=True)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    stored = exp.store.get(spec)
    assert stored is not None and "train_correct" not in stored.recorders
    done, todo = exp.pending()
    ((_, wanted),) = todo  # the stored run is recorded again, with every signal old and new
    requests = sorted(wanted, key=lambda r: r.key)
    keys = [r.key for r in requests]
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, exp.prepared(spec.data), requests, checkpoint=_Interrupt(exp.store, spec, keys, 2),
                  checkpoint_every_s=0, progress=False)

    epochs: list[int] = []
    real = training._seed_for

    def spy(seed: int, epoch: int, stream: int) -> int:  # the epochs the training loop trains
        if stream == 0:
            epochs.append(epoch)
        return real(seed, epoch, stream)

    monkeypatch.setattr(training, "_seed_for", spy)
    result = Experiment(cfg).run()
    assert result.trained == [spec.label()]
    assert epochs == [2, 3]  # resumed after epoch 2 (it restarted at 0: [0, 1, 2, 3])
    again = exp.store.get(spec)
    assert again is not None and {"train_correct", *stored.recorders} <= again.recorders
    assert not exp.store.checkpoint_path(spec).exists()  # cleared once the run was stored


def test_a_refused_entry_write_names_the_file_as_in_the_entry_not_its_temporary_folder(tmp_path, base_spec,
                                                                                        monkeypatch) -> None:
    def refused(folder, arrays):  # as `ulimit -f` refuses the biggest array
        raise OSError(errno.EFBIG, "File too large", str(folder / "train_loss.loss.npy"))

    monkeypatch.setattr(store_mod, "_write_arrays", refused)
    store = RunStore(tmp_path / "store")
    out = _output()
    with pytest.raises(StorageError) as caught:
        store.put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    entry = store.root / "runs" / base_spec.digest()
    assert f"cannot write run store entry {entry / 'train_loss.loss.npy'} (File too large)" in str(caught.value)
    assert "raise the file size limit" in str(caught.value)
    assert list((store.root / "runs").iterdir()) == []


def test_a_file_named_as_an_entry_is_refused_before_training_and_kept(make_config) -> None:
    cfg = make_config(epochs=2)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    runs = exp.store.root / "runs"
    runs.mkdir(parents=True)
    (runs / spec.digest()).write_text("my notes\n")
    with pytest.raises(HarnessError, match=f"{runs / spec.digest()} is a file, not a folder memprox wrote.*move"):
        Experiment(cfg).run()
    assert (runs / spec.digest()).read_text() == "my notes\n"  # the run stored there would have deleted it


def test_a_link_named_as_an_entry_to_a_users_folder_is_refused_and_nothing_moves(make_config, tmp_path) -> None:
    cfg = make_config(epochs=2)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    (mine := tmp_path / "mine").mkdir()
    (mine / "notes.txt").write_text("x")
    (runs := exp.store.root / "runs").mkdir(parents=True)
    (runs / spec.digest()).symlink_to(mine)
    with pytest.raises(HarnessError, match="is a link, not a folder memprox wrote"):
        Experiment(cfg).run()
    assert (runs / spec.digest()).resolve() == mine and [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_an_entry_rewritten_through_a_link_moves_nothing_out_of_the_linked_folder(tmp_path, base_spec) -> None:
    """A link to a complete entry is read through; recording it again (more signals) replaces the link alone.
    The user's files in the folder it points to stayed there only once the store stopped listing through links
    (they were moved into the new entry)."""
    store = RunStore(tmp_path / "store")
    out = _output()
    store.put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    entry = store.root / "runs" / base_spec.digest()
    entry.rename(mine := tmp_path / "mine")
    (mine / "notes.txt").write_text("x")
    entry.symlink_to(mine)
    assert store.get(base_spec) is not None  # read through the link
    store.put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    assert (mine / "notes.txt").read_text() == "x" and not entry.is_symlink()
    assert sorted(p.name for p in entry.iterdir()) == sorted(["manifest.json", "train_loss.loss.npy",
                                                               "train_prob.p_label.npy"])


def test_a_folder_where_the_checkpoint_goes_stays_and_the_run_is_stored(make_config) -> None:
    cfg = make_config(epochs=2, checkpoint_every_s=1e-6)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    exp.store.create()
    exp.store.checkpoint_path(spec).mkdir()
    with pytest.warns(UserWarning, match="cannot write a checkpoint"):
        result = Experiment(cfg).run()  # it ended in IsADirectoryError once the run was stored
    assert result.trained == [spec.label()] and exp.store.get(spec) is not None
    assert exp.store.checkpoint_path(spec).is_dir()


class _Killed(BaseException):
    """Stands in for kill -9: nothing after it runs in the swap (no rollback, no except OSError)."""


@pytest.mark.parametrize("kill_at", [2, 3])  # the new entry's rename into place; the user's file's move into it
def test_a_users_file_in_an_entry_set_aside_by_a_killed_swap_goes_back_to_the_entry(tmp_path, base_spec, monkeypatch,
                                                                                   kill_at) -> None:
    store = RunStore(tmp_path / "store")
    out = _output()
    store.put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    entry = store.root / "runs" / base_spec.digest()
    (entry / "notes.txt").write_text("mine")
    real, calls = store_mod.os.rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == kill_at:
            raise _Killed
        return real(src, dst)

    monkeypatch.setattr(store_mod.os, "rename", rename)
    more = _output()
    more.arrays["train_margin"] = {"margin": np.ones((3, 5), np.float32)}
    more.recorder_seconds["train_margin"], more.recorder_flops["train_margin"] = 0.1, 0
    with pytest.raises(_Killed):
        store.put(base_spec, more.arrays, make_manifest(base_spec, more, "single", "cpu"))
    monkeypatch.undo()
    (aside,) = [p for p in (store.root / "runs").iterdir() if p.name.startswith(".old-")]
    assert (aside / "notes.txt").read_text() == "mine"  # as a kill leaves it

    RunStore(tmp_path / "store").clean()  # every run does it first
    assert (entry / "notes.txt").read_text() == "mine"
    assert [p.name for p in (store.root / "runs").iterdir()] == [entry.name]  # nothing set aside is left
    stored = store.get(base_spec)
    assert stored is not None  # the old entry put back (2) or the new one kept (3), whole
    assert stored.recorders == ({"train_loss", "train_prob"} if kill_at == 2 else {"train_loss", "train_prob",
                                                                                    "train_margin"})


def _refused(parent: Path, prefix: str) -> Path:
    """`folder_beside` as mkdtemp fails in a folder made read-only (chattr +i) after training began."""
    raise OSError(errno.EPERM, "Operation not permitted", str(Path(parent) / f"{prefix}k1ll3d9x"))


def test_an_entry_folder_that_cannot_be_made_names_the_folder_that_refused_it(tmp_path, base_spec,
                                                                               monkeypatch) -> None:
    store = RunStore(tmp_path / "store")
    monkeypatch.setattr(store_mod, "folder_beside", _refused)
    out = _output()
    with pytest.raises(StorageError) as caught:
        store.put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    runs = store.root / "runs"
    assert f"cannot write run store entry {runs} (Operation not permitted)" in str(caught.value)  # not runs/.tmp-...


def test_a_staging_folder_that_cannot_be_made_names_the_output_folder(tmp_path, monkeypatch) -> None:
    (out := tmp_path / "out").mkdir()
    monkeypatch.setattr(outputs_place, "folder_beside", _refused)  # where `_new_folder` looks it up
    with pytest.raises(StorageError) as caught, outputs.staging(out):
        pass
    assert f"cannot write outputs for {out} to {tmp_path} (Operation not permitted)" in str(caught.value)  # beside
