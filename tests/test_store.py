"""Run store: round trips, damage detection and recompute, atomic writes, reuse, and resume."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import harness.training as training
from harness.errors import StorageError
from harness.experiment import Experiment
from harness.jobs import make_manifest
from harness.recorders import RecorderRequest
from harness.runspec import RunSpec
from harness.store import RunStore
from harness.training import RunOutput, train_run

REQUESTS = sorted(
    [RecorderRequest.of("train_loss"), RecorderRequest.of("train_correct"), RecorderRequest.of("train_margin"),
     RecorderRequest.of("train_prob"), RecorderRequest.of("eval_pass", epochs="all"),
     RecorderRequest.of("eval_pass", epochs="last")],
    key=lambda r: r.key,
)
KEYS = [r.key for r in REQUESTS]


def _output() -> RunOutput:
    rng = np.random.default_rng(0)
    arrays = {
        "train_loss": {"loss": rng.random((3, 5), dtype=np.float32)},
        "train_prob": {"p_label": rng.random((3, 5), dtype=np.float32), "el2n": rng.random((3, 5))},
    }
    return RunOutput(arrays=arrays, train_seconds=2.5, train_flops=1234, recorder_seconds={"train_loss": 0.1,
                     "train_prob": 0.2}, recorder_flops={"train_loss": 0, "train_prob": 7}, train_acc=0.75,
                     test_acc=0.5, history=[{"epoch": 1, "phase": 1, "loss": 1.0, "acc": 0.5}])


def _put(store: RunStore, spec: RunSpec, out: RunOutput, wall: float = 0.0):
    return store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu", wall=wall))


def _tmp_leftovers(store: RunStore) -> list[str]:
    return [p.name for p in (store.root / "runs").iterdir() if p.name.startswith((".tmp", ".old"))] + [
        p.name for p in (store.root / "partial").iterdir() if ".tmp" in p.name or p.name.startswith(".")]


# --- the store on its own --------------------------------------------------------------------


def test_put_get_roundtrip(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    assert store.get(base_spec) is None
    out = _output()
    _put(store, base_spec, out, wall=3.0)
    got = store.get(base_spec)
    assert got is not None
    assert got.path.name == base_spec.digest()
    assert got.recorders == {"train_loss", "train_prob"}
    for key, arrays in out.arrays.items():
        back = got.arrays(key)
        assert set(back) == set(arrays)
        for name, arr in arrays.items():
            np.testing.assert_array_equal(back[name], arr)
            assert back[name].dtype == arr.dtype
    m = got.manifest
    assert (m.train_seconds, m.train_flops, m.train_acc, m.test_acc) == (2.5, 1234, 0.75, 0.5)
    rec = m.recorders["train_prob"]
    assert (rec.arrays, rec.seconds, rec.flops) == (["el2n", "p_label"], 0.2, 7)
    assert m.spec_hash == base_spec.digest() and m.label == base_spec.label()
    assert m.spec == json.loads(json.dumps(base_spec.to_dict(), default=str))
    assert m.wall_seconds == 3.0 and m.history == out.history and m.engine == "single"
    assert m.threads == torch.get_num_threads()
    assert set(m.checksums) == {"train_loss.loss.npy", "train_prob.p_label.npy", "train_prob.el2n.npy"}
    with pytest.raises(KeyError, match="did not record"):
        got.arrays("train_margin")
    assert _tmp_leftovers(store) == []


def test_entries_are_readable_as_the_umask_allows(tmp_path, base_spec) -> None:
    """mkdtemp makes 0700 folders: an entry must be readable by the group/others when the umask says so."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        stored = _put(RunStore(tmp_path / "store"), base_spec, _output())
    finally:
        os.umask(old)
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in stored.path.iterdir())


def test_distinct_specs_get_distinct_entries(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    other = replace(base_spec, seed=1)
    assert other.digest() != base_spec.digest()
    _put(store, base_spec, _output())
    assert store.get(other) is None
    assert store.get(replace(base_spec)) is not None  # equal spec, same address


def test_put_overwrites_an_existing_entry(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    _put(store, base_spec, _output())
    second = replace(_output(), train_acc=0.9)
    _put(store, base_spec, second)
    assert store.get(base_spec).manifest.train_acc == 0.9
    assert len(list((store.root / "runs").iterdir())) == 1


def test_checksum_damage_is_detected_and_replaced_by_the_next_put(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec, _output())
    np.save(stored.path / "train_loss.loss.npy", np.zeros((3, 5), dtype=np.float32))  # valid .npy, wrong bytes
    with pytest.warns(UserWarning, match="damaged"):
        assert store.get(base_spec) is None
    assert stored.path.exists()  # a reader never deletes: a writer may be about to replace it
    _put(store, base_spec, _output())
    np.testing.assert_array_equal(store.get(base_spec).arrays("train_loss")["loss"],
                                  _output().arrays["train_loss"]["loss"])


@pytest.mark.parametrize("damage", ["missing_array", "missing_manifest", "garbled_manifest", "manifest_lacks_key",
                                    "old_dict_manifest"])
def test_other_damage_reads_as_missing_and_is_replaced(tmp_path, base_spec, damage: str) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec, _output())
    manifest = stored.path / "manifest.json"
    if damage == "missing_array":
        (stored.path / "train_prob.el2n.npy").unlink()
    elif damage == "missing_manifest":
        manifest.unlink()
    elif damage == "garbled_manifest":
        manifest.write_text("{not json")
    elif damage == "manifest_lacks_key":
        raw = json.loads(manifest.read_text())
        del raw["train_acc"]
        manifest.write_text(json.dumps(raw))
    else:  # "old_dict_manifest": written before the manifest recorded the engine
        raw = json.loads(manifest.read_text())
        del raw["engine"], raw["threads"]
        manifest.write_text(json.dumps(raw))
    with pytest.warns(UserWarning, match="damaged"):
        assert store.get(base_spec) is None
    _put(store, base_spec, _output())  # recomputed into place
    assert store.get(base_spec).manifest.train_acc == 0.75
    assert _tmp_leftovers(store) == []


def test_failed_put_leaves_no_entry(tmp_path, base_spec, monkeypatch) -> None:
    store = RunStore(tmp_path / "store")
    calls = []

    def failing_save(path, arr):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.asanyarray(arr))

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(StorageError, match="No space left"):
        _put(store, base_spec, _output())
    monkeypatch.undo()
    assert store.get(base_spec) is None
    assert not (store.root / "runs" / base_spec.digest()).exists()


def test_failed_put_cleans_its_temporary_folder(tmp_path, base_spec, monkeypatch) -> None:
    store = RunStore(tmp_path / "store")

    def failing_save(path, arr):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(StorageError):
        _put(store, base_spec, _output())
    assert _tmp_leftovers(store) == []


def test_checkpoint_roundtrip_and_key_mismatch(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    assert store.load_checkpoint(base_spec, ["a"]) is None
    state = {"epoch": 2, "weights": torch.arange(4.0), "history": [{"epoch": 1}]}
    store.save_checkpoint(base_spec, state, ["b", "a"])
    assert _tmp_leftovers(store) == []
    back = store.load_checkpoint(base_spec, ["a", "b"])  # key order does not matter
    assert back["epoch"] == 2 and back["history"] == [{"epoch": 1}]
    torch.testing.assert_close(back["weights"], torch.arange(4.0))
    assert store.load_checkpoint(base_spec, ["a"]) is None  # recorded different signals: start over
    _put(store, base_spec, _output())  # a finished run clears its checkpoint
    assert store.load_checkpoint(base_spec, ["a", "b"]) is None


def test_torn_checkpoint_restarts(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    store.save_checkpoint(base_spec, {"epoch": 1}, ["a"])
    path = store.root / "partial" / f"{base_spec.digest()}.pt"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.warns(UserWarning, match="unreadable"):
        assert store.load_checkpoint(base_spec, ["a"]) is None


# --- the store inside an experiment ----------------------------------------------------------


def _only_run(exp: Experiment) -> RunSpec:
    (spec,) = exp.plan.runs
    return spec


def test_rerun_trains_nothing(make_config) -> None:
    cfg = make_config(epochs=2)
    first = Experiment(cfg).run()
    assert len(first.trained) == 1 and first.reused == []
    second = Experiment(cfg).run()
    assert second.trained == []
    assert second.reused == first.trained
    assert second.failures == []
    np.testing.assert_array_equal(second.raw["value"].to_numpy(), first.raw["value"].to_numpy())


def test_new_recorder_retrains_keeping_the_old_ones(make_config) -> None:
    Experiment(make_config(epochs=2, proxies="csl")).run()
    both = Experiment(make_config(epochs=2, proxies="csl,aum", overwrite=True))
    result = both.run()
    assert len(result.trained) == 1
    stored = both.store.get(_only_run(both))
    assert {"train_loss", "train_margin"} <= stored.recorders
    again = Experiment(make_config(epochs=2, proxies="aum", overwrite=True)).run()
    assert again.trained == [] and len(again.reused) == 1


def test_damaged_entry_is_recomputed_by_the_next_run(make_config) -> None:
    cfg = make_config(epochs=2)
    exp = Experiment(cfg)
    exp.run()
    spec = _only_run(exp)
    stored = exp.store.get(spec)
    original = stored.arrays("train_loss")["loss"]
    np.save(stored.path / "train_loss.loss.npy", np.zeros_like(original))
    with pytest.warns(UserWarning, match="damaged"):
        again = Experiment(cfg)
        result = again.run()
    assert result.trained == [spec.label()] and result.reused == []
    np.testing.assert_array_equal(again.store.get(spec).arrays("train_loss")["loss"], original)
    assert _tmp_leftovers(again.store) == []


class _Interrupt:
    """A checkpoint callback that saves through the store, then interrupts after epoch k."""

    def __init__(self, store: RunStore, spec: RunSpec, keys: list[str], k: int) -> None:
        self.store, self.spec, self.keys, self.k = store, spec, keys, k

    def __call__(self, state: dict) -> None:
        self.store.save_checkpoint(self.spec, state, self.keys)
        if state["epoch"] == self.k:
            raise KeyboardInterrupt


def _spy_epochs(monkeypatch) -> list[int]:
    """Epochs (0-based, global) the training loop draws randomness for, i.e. the epochs it trains."""
    epochs: list[int] = []
    real = training._seed_for

    def spy(seed: int, epoch: int, stream: int) -> int:
        if stream == 0:
            epochs.append(epoch)
        return real(seed, epoch, stream)

    monkeypatch.setattr(training, "_seed_for", spy)
    return epochs


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, digits_noisy, base_spec, monkeypatch) -> None:
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=5))
    store, k = RunStore(tmp_path / "store"), 2
    full = train_run(spec, digits_noisy, REQUESTS, progress=False)

    with pytest.raises(KeyboardInterrupt):
        train_run(spec, digits_noisy, REQUESTS, checkpoint=_Interrupt(store, spec, KEYS, k), checkpoint_every_s=0,
                  progress=False)
    state = store.load_checkpoint(spec, KEYS)
    assert state is not None and state["epoch"] == k
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    saved_history = [dict(h) for h in state["history"]]

    epochs = _spy_epochs(monkeypatch)
    resumed = train_run(spec, digits_noisy, REQUESTS, resume_state=state, progress=False)
    assert epochs == [2, 3, 4]  # it started at epoch k
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.history[:k] == saved_history
    for got, want in zip(resumed.history, full.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert got["acc"] == pytest.approx(want["acc"])
    assert set(resumed.arrays) == set(full.arrays) == set(KEYS)
    for key in KEYS:
        for name, arr in full.arrays[key].items():
            np.testing.assert_allclose(resumed.arrays[key][name], arr, rtol=1e-5, atol=1e-6, equal_nan=True,
                                       err_msg=f"{key}.{name}")
    assert resumed.train_acc == pytest.approx(full.train_acc)
    assert resumed.test_acc == pytest.approx(full.test_acc)
    assert resumed.train_flops == full.train_flops
    assert resumed.recorder_flops == full.recorder_flops


def test_experiment_resumes_an_interrupted_run(make_config, digits_noisy, monkeypatch) -> None:
    cfg = make_config(epochs=4, proxies="csl,forgetting", checkpoint_every_s=1e-6)
    exp = Experiment(cfg)
    spec = _only_run(exp)
    keys = sorted(r.key for r in exp.plan.runs[spec])
    requests = sorted(exp.plan.runs[spec], key=lambda r: r.key)
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, exp.prepared(spec.data), requests, checkpoint=_Interrupt(exp.store, spec, keys, 3),
                  checkpoint_every_s=0, progress=False)
    assert exp.store.get(spec) is None

    epochs = _spy_epochs(monkeypatch)
    result = Experiment(cfg).run()
    assert epochs == [3]
    assert result.trained == [spec.label()]
    assert exp.store.load_checkpoint(spec, keys) is None  # cleared once the run was stored
    stored = exp.store.get(spec)
    assert [h["epoch"] for h in stored.manifest.history] == [1, 2, 3, 4]
    monkeypatch.undo()
    full = train_run(spec, digits_noisy, requests, progress=False)
    for key in keys:
        for name, arr in full.arrays[key].items():
            np.testing.assert_allclose(stored.arrays(key)[name], arr, rtol=1e-5, atol=1e-6, err_msg=f"{key}.{name}")
