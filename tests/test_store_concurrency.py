"""Several processes on one store: each spec trained once, no crash, no complete entry lost, and a
reader never sees an entry vanish while writers replace it."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.jobs import make_manifest
from harness.store import RunStore
from harness.training import RunOutput

#: Each process trains its jobs itself (`--executor inprocess`): the store is shared by the two
#: processes either way, and a pool would start two more interpreters per process (seconds of imports).
ARGS = ["--proxies", "csl,final_loss,confident_learning", "--tasks", "mislabeled", "--seeds", "1",
        "--noise-rates", "0.1", "--epochs", "2", "--device", "cpu", "--threads", "1", "--no-progress",
        "--executor", "inprocess"]


def test_two_processes_running_one_experiment_train_each_run_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", *ARGS, "--store", str(store),
                               "--out", str(tmp_path / f"out{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    summaries = [json.loads((tmp_path / f"out{i}" / "summary.json").read_text()) for i in range(2)]
    trained = summaries[0]["trained"] + summaries[1]["trained"]
    assert len(trained) == len(set(trained)) == 4  # base + 3 folds, each trained by exactly one process
    for s in summaries:
        assert sorted(s["trained"] + s["reused"]) == sorted(trained) and not s["failures"]
    for name in ("leaderboard.csv", "raw.csv", "scores/noise=0.1_seed0.csv"):
        assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out1" / name).read_bytes()
    runs = RunStore(store).root / "runs"
    entries = sorted(p.name for p in runs.iterdir())
    assert len(entries) == 4 and not any(e.startswith(".") for e in entries)
    for entry in entries:  # every entry complete and its checksums valid
        manifest = json.loads((runs / entry / "manifest.json").read_text())
        assert manifest["spec_hash"] == entry and set(manifest["checksums"])


def _output(value: float) -> RunOutput:
    arrays = {"train_loss": {"loss": np.full((3, 50), value, dtype=np.float32)},
              "train_prob": {"p_label": np.full((3, 50), value, dtype=np.float32)}}
    return RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.0,
                     "train_prob": 0.0}, recorder_flops={"train_loss": 0, "train_prob": 0}, train_acc=value,
                     test_acc=value)


def _writer(root: str, spec, value: float, n: int) -> None:
    store = RunStore(root)
    for _ in range(n):
        out = _output(value)
        store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))


def test_concurrent_replacement_never_crashes_or_hides_an_entry(tmp_path: Path, base_spec) -> None:
    """The two failures measured before the lock: `Directory not empty` when two processes replace
    one entry, `FileNotFoundError` when one replaces an entry another is reading."""
    root = str(tmp_path / "store")
    _writer(root, base_spec, 0.0, 1)
    ctx = mp.get_context("fork")
    writers = [ctx.Process(target=_writer, args=(root, base_spec, v, 15)) for v in (1.0, 2.0)]
    for w in writers:
        w.start()
    reader = RunStore(root)
    reads = 0
    while any(w.is_alive() for w in writers):
        stored = reader.get(base_spec)  # a complete entry at every moment, never None
        assert stored is not None
        loss = stored.arrays("train_loss")["loss"]
        assert loss.shape == (3, 50) and len(set(loss.ravel().tolist())) == 1
        reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 0 and reader.get(base_spec).manifest.train_acc in (1.0, 2.0)
    assert [p.name for p in (tmp_path / "store" / "runs").iterdir()] == [base_spec.digest()]
