"""The store trusts only what it can verify, and reads nothing that could run code.

Issue 16: a changed manifest number, emptied checksums, a manifest naming a missing array and an
unreadable entry must not reach an output (recompute with one line, or one error line naming the
path and the fix); a checkpoint planted in `partial/` must not run code (`weights_only=True`); and
nothing the harness reads from a store or a user file is unpickled.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
import multiprocessing as mp
import os
import pathlib
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import harness.training as training
from harness.errors import HarnessError, StorageError
from harness.experiment import Experiment
from harness.jobs import make_manifest
from harness.runspec import RunSpec
from harness.store import RunStore, StoredRun
from harness.training import RunOutput

ROOT = Path(__file__).resolve().parents[1]


def _output(value: float = 0.5) -> RunOutput:
    rng = np.random.default_rng(0)
    arrays = {"train_loss": {"loss": np.full((3, 5), value, dtype=np.float32)},
              "train_prob": {"p_label": rng.random((3, 5), dtype=np.float32), "el2n": rng.random((3, 5))}}
    return RunOutput(arrays=arrays, train_seconds=2.5, train_flops=1234,
                     recorder_seconds={"train_loss": 0.1, "train_prob": 0.2},
                     recorder_flops={"train_loss": 0, "train_prob": 7}, train_acc=value, test_acc=0.5,
                     history=[{"epoch": 1, "phase": 1, "loss": 1.0, "acc": 0.5}])


def _put(store: RunStore, spec: RunSpec, value: float = 0.5) -> StoredRun:
    out = _output(value)
    return store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))


def _sign(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `manifest_sha256` recomputed as documented (canonical JSON of the other fields),
    so that only the store's other checks can catch what a test changed."""
    body = {k: v for k, v in raw.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {**body, "manifest_sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def _edit_manifest(entry: Path, edit, resign: bool = False) -> None:
    path = entry / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(_sign(raw) if resign else raw, indent=1))


def _untrusted(store: RunStore, spec: RunSpec, match: str = "damaged") -> None:
    """`get` reads the entry as missing, with one warning line naming it."""
    with pytest.warns(UserWarning, match=match) as caught:
        assert store.get(spec) is None
    messages = [str(w.message) for w in caught if str(store.root) in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0] and spec.digest() in messages[0]


def _set(path: tuple, value: Any):
    def edit(raw: dict) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


# --- every number that can reach an output is covered by a checksum --------------------------


@pytest.mark.parametrize("field, value", [
    (("train_acc",), 0.99), (("test_acc",), 0.01), (("train_flops",), 1), (("train_seconds",), 1e-9),
    (("wall_seconds",), 123.0), (("recorders", "train_prob", "flops"), 10**12),
    (("recorders", "train_prob", "seconds"), 99.0), (("history", 0, "loss"), 0.0),
    (("spec", "seed"), 7),
])
def test_a_changed_manifest_number_is_not_trusted(tmp_path, base_spec, field, value) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    _edit_manifest(stored.path, _set(field, value))  # still valid JSON, checksums untouched
    _untrusted(store, base_spec)
    _put(store, base_spec)  # the next writer replaces it
    assert store.get(base_spec).manifest.train_acc == 0.5


@pytest.mark.parametrize("resign", [False, True], ids=["stale_digest", "digest_recomputed"])
def test_emptied_checksums_with_a_flipped_array_value_are_not_trusted(tmp_path, base_spec, resign) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    _edit_manifest(stored.path, _set(("checksums",), {}), resign=resign)
    np.save(stored.path / "train_loss.loss.npy", np.full((3, 5), 0.25, dtype=np.float32))
    _untrusted(store, base_spec)


def test_a_checksum_missing_for_one_array_is_not_trusted(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    _edit_manifest(stored.path, lambda raw: raw["checksums"].pop("train_prob.el2n.npy"), resign=True)
    _untrusted(store, base_spec)


@pytest.mark.parametrize("with_checksum", [False, True])
def test_a_manifest_naming_a_missing_array_is_recomputed(tmp_path, base_spec, with_checksum) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)

    def ghost(raw: dict) -> None:
        raw["recorders"]["train_loss"]["arrays"].append("ghost")
        if with_checksum:
            raw["checksums"]["train_loss.ghost.npy"] = "0" * 64

    _edit_manifest(stored.path, ghost, resign=True)
    _untrusted(store, base_spec)


def test_an_entry_written_before_manifest_checksums_is_recomputed(tmp_path, base_spec) -> None:
    """Decided for existing stores: an entry without the manifest's own checksum cannot be
    verified, so it is recomputed once (one line each), then trusted."""
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    _edit_manifest(stored.path, lambda raw: raw.pop("manifest_sha256", None))
    _untrusted(store, base_spec, match="no checksum")
    _put(store, base_spec)
    assert store.get(base_spec) is not None


def test_the_manifest_checksum_is_over_its_canonical_json(tmp_path, base_spec) -> None:
    """Documented so other tools can check an entry: SHA-256 of the other fields as JSON with
    sorted keys and compact separators; the file itself stays readable (indented)."""
    stored = _put(RunStore(tmp_path / "store"), base_spec)
    text = (stored.path / "manifest.json").read_text()
    raw = json.loads(text)
    assert raw["manifest_sha256"] == _sign(raw)["manifest_sha256"] and "\n" in text
    assert set(raw["checksums"]) == {"train_loss.loss.npy", "train_prob.p_label.npy", "train_prob.el2n.npy"}
    for fname, digest in raw["checksums"].items():  # over the bytes on disk
        assert hashlib.sha256((stored.path / fname).read_bytes()).hexdigest() == digest


def test_a_put_whose_manifest_names_arrays_it_lacks_is_refused(tmp_path, base_spec) -> None:
    """An entry readers would reject is never swapped in (it would be recomputed forever)."""
    store = RunStore(tmp_path / "store")
    out = _output()
    manifest = make_manifest(base_spec, out, "single", "cpu")
    with pytest.raises(StorageError, match=base_spec.digest()):
        store.put(base_spec, {"train_loss": out.arrays["train_loss"]}, manifest)
    assert list((store.root / "runs").iterdir()) == []


def test_arrays_are_checked_on_the_bytes_loaded(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    _put(store, base_spec)
    stored = store.get(base_spec)
    np.save(stored.path / "train_loss.loss.npy", np.zeros((3, 5), dtype=np.float32))  # after get verified it
    with pytest.raises(StorageError, match="damaged while in use") as info:
        stored.arrays("train_loss")
    assert str(stored.path) in str(info.value) and "\n" not in str(info.value)


def test_arrays_after_another_process_replaced_the_entry_match_its_manifest(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    _put(store, base_spec, value=0.5)
    stored = store.get(base_spec)
    _put(RunStore(tmp_path / "store"), base_spec, value=0.75)  # another process swaps in a new entry
    loss = stored.arrays("train_loss")["loss"]
    assert set(loss.ravel().tolist()) == {0.75} and stored.manifest.train_acc == 0.75


def test_a_changed_cost_in_the_store_does_not_reach_the_leaderboard(make_config) -> None:
    cfg = make_config(epochs=2)
    first = Experiment(cfg)
    first.run()
    (spec,) = first.plan.runs
    board = pd.read_csv(cfg.out / "leaderboard.csv")
    entry = first.store.root / "runs" / spec.digest()
    _edit_manifest(entry, lambda raw: raw.update(train_flops=raw["train_flops"] * 1000))
    with pytest.warns(UserWarning, match="damaged"):
        result = Experiment(replace(cfg, overwrite=True)).run()
    assert result.trained == [spec.label()]
    again = pd.read_csv(cfg.out / "leaderboard.csv")
    flops = [c for c in board.columns if "flops" in c]
    assert flops and np.allclose(again[flops].to_numpy(float), board[flops].to_numpy(float), equal_nan=True)


def test_an_experiment_recomputes_an_entry_naming_a_missing_array(make_config) -> None:
    cfg = make_config(epochs=2)
    first = Experiment(cfg)
    first.run()
    (spec,) = first.plan.runs
    entry = first.store.root / "runs" / spec.digest()
    _edit_manifest(entry, lambda raw: raw["recorders"]["train_loss"]["arrays"].append("ghost"), resign=True)
    with pytest.warns(UserWarning, match="damaged"):
        result = Experiment(replace(cfg, overwrite=True)).run()
    assert result.trained == [spec.label()] and not result.failures


# --- unreadable entries: one line naming the path and the fix ---------------------------------


def _deny_reads_under(monkeypatch, folder: Path, only: str = "") -> None:
    """As mode 000 would for a non-root user (the suite may run as root, which chmod does not stop)."""

    def denied(path) -> bool:
        p = Path(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else None
        return p is not None and p.is_relative_to(folder) and p.name.endswith(only)

    def guard(real):
        def wrapped(self, *a, **k):
            if denied(self):
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **k)
        return wrapped

    for name in ("read_bytes", "read_text"):
        monkeypatch.setattr(pathlib.Path, name, guard(getattr(pathlib.Path, name)))
    real_open = builtins.open

    def open_(file, *a, **k):
        if denied(file):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", open_)


@pytest.mark.parametrize("only", ["manifest.json", ".npy"])
def test_an_unreadable_entry_is_one_error_naming_the_path_and_the_fix(tmp_path, base_spec, monkeypatch,
                                                                        only) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    _deny_reads_under(monkeypatch, stored.path, only)
    with pytest.raises(HarnessError, match="fix the permissions") as info:
        store.get(base_spec)
    assert str(stored.path) in str(info.value) and "\n" not in str(info.value)


def test_arrays_unreadable_after_get_name_the_path_and_the_fix(tmp_path, base_spec, monkeypatch) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    got = store.get(base_spec)
    _deny_reads_under(monkeypatch, stored.path, ".npy")
    with pytest.raises(HarnessError, match="fix the permissions"):
        got.arrays("train_loss")


def test_an_experiment_on_an_unreadable_entry_stops_before_training(make_config, monkeypatch) -> None:
    cfg = make_config(epochs=2)
    first = Experiment(cfg)
    first.run()
    (spec,) = first.plan.runs
    entry = first.store.root / "runs" / spec.digest()
    _deny_reads_under(monkeypatch, entry)
    calls = []
    monkeypatch.setattr(training, "train_run", lambda *a, **k: calls.append(a))
    with pytest.raises(HarnessError, match=f"{entry}.*fix the permissions of {entry} or remove it"):
        Experiment(replace(cfg, overwrite=True)).run()
    assert calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 folder")
@pytest.mark.parametrize("what", ["folder", "manifest"])
def test_a_mode_000_entry_is_one_error_naming_the_path(tmp_path, base_spec, what) -> None:
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    target = stored.path if what == "folder" else stored.path / "manifest.json"
    target.chmod(0)
    try:
        with pytest.raises(HarnessError, match="fix the permissions") as info:
            store.get(base_spec)
        assert str(stored.path) in str(info.value)
    finally:
        target.chmod(0o755 if what == "folder" else 0o644)


# --- readers during a rewrite, and what kills leave behind ------------------------------------


def _writer(root: str, spec: RunSpec, n: int) -> None:
    store = RunStore(root)
    for i in range(n):
        _put(store, spec, value=float(1 + i % 2))


def _reader(root: str, spec: RunSpec, stop) -> None:
    """Every read is complete, and its arrays belong to the manifest read with them."""
    store = RunStore(root)
    while not stop.is_set():
        stored = store.get(spec)
        assert stored is not None
        loss = stored.arrays("train_loss")["loss"]
        assert set(loss.ravel().tolist()) == {stored.manifest.train_acc}


def test_two_readers_during_a_rewrite_see_complete_consistent_entries(tmp_path, base_spec) -> None:
    root = str(tmp_path / "store")
    _put(RunStore(root), base_spec, value=1.0)
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    readers = [ctx.Process(target=_reader, args=(root, base_spec, stop)) for _ in range(2)]
    for r in readers:
        r.start()
    writer = ctx.Process(target=_writer, args=(root, base_spec, 20))
    writer.start()
    writer.join(timeout=120)
    stop.set()
    for r in readers:
        r.join(timeout=60)
    assert writer.exitcode == 0 and [r.exitcode for r in readers] == [0, 0]
    assert [p.name for p in (tmp_path / "store" / "runs").iterdir()] == [base_spec.digest()]


def test_kill_9_during_puts_leaves_a_verified_entry_and_only_cleanable_debris(tmp_path, base_spec) -> None:
    root = str(tmp_path / "store")
    _put(RunStore(root), base_spec, value=1.0)
    ctx = mp.get_context("fork")
    for delay in (0.05, 0.15, 0.3):
        writer = ctx.Process(target=_writer, args=(root, base_spec, 10_000))
        writer.start()
        writer.join(timeout=delay)
        os.kill(writer.pid, 9)
        writer.join()
        store = RunStore(root)
        store.clean()
        stored = store.get(base_spec)  # the old or the new complete entry, never a damaged one
        assert stored is not None
        assert set(stored.arrays("train_loss")["loss"].ravel().tolist()) == {stored.manifest.train_acc}
        assert [p.name for p in (tmp_path / "store" / "runs").iterdir()] == [base_spec.digest()]


def test_clean_removes_only_the_stores_own_leftovers(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    runs, digest = store.root / "runs", base_spec.digest()
    own = runs / f".tmp-{digest}-k1ll3d9x"  # a put killed with -9: arrays written, no manifest yet
    own.mkdir()
    np.save(own / "train_loss.loss.npy", np.zeros(3))
    notes = runs / f".tmp-{digest}-notes"  # looks like a leftover, holds a user's file
    notes.mkdir()
    (notes / "my_notes.md").write_text("mine")
    nested = runs / f".old-{digest}-4242"
    (nested / "sub").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.npy").write_bytes(b"x")
    link = runs / f".tmp-{digest}-linkxxxx"
    link.symlink_to(outside)
    assert store.clean() == [own.name]
    assert (notes / "my_notes.md").exists() and (nested / "sub").is_dir() and link.is_symlink()
    assert (outside / "keep.npy").exists() and not (runs / digest).exists()  # not "restored" either


# --- checkpoints: weights only, verified, of this spec -----------------------------------------


class _Planted:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _plant(store: RunStore, spec: RunSpec, keys: list[str], marker: Path) -> Path:
    path = store.root / "partial" / f"{spec.digest()}.pt"
    blob = {"format": 2, "spec": spec.digest(), "recorder_keys": sorted(keys),
            "state": {"epoch": 1, "payload": _Planted(marker)}}
    torch.save(blob, path)
    return path


def test_a_planted_checkpoint_runs_no_code_and_restarts_the_run(tmp_path, base_spec) -> None:
    store, marker = RunStore(tmp_path / "store"), tmp_path / "pwned"
    path = _plant(store, base_spec, ["a"], marker)
    with pytest.warns(UserWarning, match="not a memprox checkpoint") as caught:
        assert store.load_checkpoint(base_spec, ["a"]) is None
    assert not marker.exists()
    assert path.exists()  # left for the run's own checkpoint to replace
    assert all("\n" not in str(w.message) for w in caught)


def test_an_experiment_ignores_a_planted_checkpoint(make_config, monkeypatch, tmp_path) -> None:
    cfg = make_config(epochs=3)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    keys = sorted(r.key for r in exp.plan.runs[spec])
    marker = tmp_path / "pwned"
    exp.store.create()  # an experiment makes its store only when training starts
    _plant(exp.store, spec, keys, marker)
    epochs: list[int] = []  # the epochs the training loop draws its batch order for, i.e. trains
    real = training._seed_for

    def spy(seed: int, epoch: int, stream: int) -> int:
        if stream == 0:
            epochs.append(epoch)
        return real(seed, epoch, stream)

    monkeypatch.setattr(training, "_seed_for", spy)
    with pytest.warns(UserWarning, match="not a memprox checkpoint"):
        result = exp.run()
    assert not marker.exists()
    assert result.trained == [spec.label()] and epochs == [0, 1, 2]  # from scratch
    assert not (exp.store.root / "partial" / f"{spec.digest()}.pt").exists()  # cleared once stored


def test_checkpoints_hold_numpy_arrays_as_tensors_and_give_them_back(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = {"epoch": 2, "model": model.state_dict(), "scale": np.float64(1.5), "betas": (0.9, 0.99),
             "recorders": {"train_loss": {"loss": np.arange(6, dtype=np.float32).reshape(2, 3),
                                          "correct": np.array([[True, False]]), "n": np.arange(3)}},
             "meters": {"k": {"flops_per_unit": None, "calls": 3}}, "history": [{"epoch": 1, "loss": 0.5}]}
    store.save_checkpoint(base_spec, state, ["train_loss"])
    path = store.root / "partial" / f"{base_spec.digest()}.pt"
    torch.load(path, weights_only=True)  # nothing in it needs unpickling
    back = store.load_checkpoint(base_spec, ["train_loss"])
    for name, arr in state["recorders"]["train_loss"].items():
        got = back["recorders"]["train_loss"][name]
        assert isinstance(got, np.ndarray) and got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    assert back["scale"] == 1.5 and back["betas"] == (0.9, 0.99) and back["history"] == state["history"]
    assert back["meters"] == state["meters"] and back["epoch"] == 2
    assert isinstance(back["model"], OrderedDict) and hasattr(back["model"], "_metadata")
    model.load_state_dict(back["model"])


def test_a_real_runs_checkpoint_loads_weights_only(tmp_path, digits_noisy, base_spec) -> None:
    from harness.recorders import RecorderRequest

    requests = [RecorderRequest.of("train_loss"), RecorderRequest.of("eval_pass", epochs="all")]
    keys = [r.key for r in requests]
    store = RunStore(tmp_path / "store")
    training.train_run(base_spec, digits_noisy, requests, progress=False, checkpoint_every_s=0,
                       checkpoint=lambda state: store.save_checkpoint(base_spec, state, keys))
    torch.load(store.root / "partial" / f"{base_spec.digest()}.pt", weights_only=True)
    state = store.load_checkpoint(base_spec, keys)
    assert state is not None and state["epoch"] == base_spec.recipe.epochs - 1


def test_a_damaged_checkpoint_restarts_the_run(tmp_path, base_spec) -> None:
    """torch does not check its zip CRCs: one flipped bit in a weight would resume silently."""
    store = RunStore(tmp_path / "store")
    store.save_checkpoint(base_spec, {"epoch": 1, "w": torch.arange(1000, dtype=torch.float32)}, ["a"])
    path = store.root / "partial" / f"{base_spec.digest()}.pt"
    data = bytearray(path.read_bytes())
    i = data.find(np.arange(500, 504, dtype=np.float32).tobytes())
    assert i > 0
    data[i] ^= 1
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="CRC"):
        assert store.load_checkpoint(base_spec, ["a"]) is None


def test_another_specs_checkpoint_is_not_resumed(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    other = replace(base_spec, seed=1)
    store.save_checkpoint(other, {"epoch": 1}, ["a"])
    os.replace(store.root / "partial" / f"{other.digest()}.pt", store.root / "partial" / f"{base_spec.digest()}.pt")
    with pytest.warns(UserWarning, match="another run"):
        assert store.load_checkpoint(base_spec, ["a"]) is None


# --- nothing read from a store or a user file is unpickled -------------------------------------


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return "missing"


def test_no_code_path_unpickles() -> None:
    """Every np.load passes allow_pickle=False and every torch.load weights_only=True; nothing calls
    pickle (or its relatives) to load. The one exception is the local pool's two ends of a socket
    pair only the two processes hold (as multiprocessing and Ray do): the worker, which reads what its
    driver sends, and the driver's channel, which reads the worker's results; never a file."""
    ipc = {"harness/executors/worker.py", "harness/executors/channel.py"}
    files = [p for d in ("harness", "proxies", "baselines") for p in sorted((ROOT / d).rglob("*.py"))
             if str(p.relative_to(ROOT)) not in ipc]
    assert len(files) > 20
    bad, loads = [], 0
    for path in files:
        for call, func in _calls(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(ROOT)}:{call.lineno}: {func}"
            if func in ("np.load", "numpy.load"):
                loads += 1
                if _keyword(call, "allow_pickle") is not False:
                    bad.append(where)
            elif func == "torch.load":
                loads += 1
                if _keyword(call, "weights_only") is not True:
                    bad.append(where)
            elif func.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal") and (
                    func.split(".")[-1] in ("load", "loads", "Unpickler", "open")):
                bad.append(where)
            elif func.endswith("read_pickle"):
                bad.append(where)
    assert loads >= 4 and bad == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["manifest.json", "train_loss.loss.npy"])
def test_a_fifo_in_an_entry_reads_as_damaged_instead_of_hanging(tmp_path, base_spec, name) -> None:
    """Reading a FIFO waits for a writer that never comes: the entry (and so the experiment) hung."""
    store = RunStore(tmp_path / "store")
    stored = _put(store, base_spec)
    (stored.path / name).unlink()
    os.mkfifo(stored.path / name)
    _untrusted(store, base_spec, match="not a plain file")
    link = stored.path / "train_prob.el2n.npy"  # a link to a FIFO is no better
    link.unlink()
    link.symlink_to(stored.path / name)
    _untrusted(store, base_spec, match="not a plain file")
