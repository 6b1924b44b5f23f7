"""Failures after (or during) training must not lose the experiment: injected write failures in the
store and in checkpoints, leftovers of kills, unwritable store and --out, Ctrl-C, all-NaN proxies,
and an --out folder that another experiment wrote."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import harness.jobs as jobs
from harness.cli import main
from harness.errors import HarnessError, Interrupted, StorageError
from harness.experiment import STAGING_MARKER, Experiment
from harness.store import RunStore
from proxies.csl import CSL


def _entries(store: RunStore) -> list[str]:
    return sorted(p.name for p in (store.root / "runs").iterdir())


def _leftovers(store: RunStore) -> list[str]:
    return [p.name for p in (store.root / "runs").iterdir() if p.name.startswith(".")] + [
        p.name for p in (store.root / "partial").iterdir()]


def _two_runs(make_config, **kw):
    return make_config(epochs=2, noise_rates=(0.05, 0.1), **kw)


# --- the store write ----------------------------------------------------------------------------


def test_failure_inside_the_store_write_keeps_every_stored_run(make_config, monkeypatch) -> None:
    cfg = _two_runs(make_config)
    calls = []
    real_save = np.save

    def failing_save(path, arr):
        calls.append(path)
        if len(calls) == 2:  # inside the second run's entry, after its first array
            raise OSError(28, "No space left on device", str(path))
        real_save(path, arr)

    monkeypatch.setattr(np, "save", failing_save)
    exp = Experiment(cfg)
    with pytest.raises(StorageError, match="No space left on device") as info:
        exp.run()
    assert str(exp.store.root) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    assert len(_entries(exp.store)) == 1 and _leftovers(exp.store) == []  # the first run is kept, no debris
    assert not cfg.out.exists()  # no half-written outputs
    again = Experiment(cfg).run()
    assert len(again.trained) == 1 and len(again.reused) == 1 and not again.failures


def test_kill_mid_swap_restores_the_complete_old_entry(make_config) -> None:
    """A writer killed after moving the old entry aside and before moving the new one in leaves
    `.old-*` (complete) and `.tmp-*`: the next run puts the old entry back and reuses it."""
    cfg = make_config(epochs=2)
    first = Experiment(cfg)
    first.run()
    (spec,) = first.plan.runs
    entry = first.store.root / "runs" / spec.digest()
    os.rename(entry, entry.parent / f".old-{spec.digest()}-999999")
    (entry.parent / f".tmp-{spec.digest()}-abc").mkdir()
    (entry.parent / f".tmp-{spec.digest()}-abc" / "train_loss.loss.npy").write_bytes(b"torn")
    result = Experiment(cfg).run()
    assert result.trained == [] and result.reused == [spec.label()]
    assert _entries(first.store) == [spec.digest()] and _leftovers(first.store) == []


def test_upgrade_that_fails_keeps_the_old_entry(make_config, monkeypatch) -> None:
    Experiment(make_config(epochs=2, proxies="csl")).run()
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(src).name.startswith(".tmp-"):
            raise OSError(5, "Input/output error", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    exp = Experiment(make_config(epochs=2, proxies="csl,aum", overwrite=True))
    with pytest.raises(StorageError, match="Input/output error"):
        exp.run()
    monkeypatch.undo()
    (spec,) = exp.plan.runs
    stored = exp.store.get(spec)
    assert stored is not None and "train_loss" in stored.recorders  # the complete old entry is in place
    assert _leftovers(exp.store) == []


def test_stale_debris_of_kills_is_cleaned(make_config) -> None:
    cfg = make_config(epochs=2)
    exp = Experiment(cfg)
    exp.run()
    (spec,) = exp.plan.runs
    root, digest = exp.store.root, spec.digest()
    (root / "runs" / f".tmp-{digest}-x1y2").mkdir()
    (root / "partial" / f"{digest}.tmp4242").write_bytes(b"torn")  # old-style checkpoint temp
    (root / "partial" / f".{digest}.pt.k3j4").write_bytes(b"torn")  # atomic_write's temp
    (root / "partial" / f"{digest}.pt").write_bytes(b"stale")  # checkpoint of a run already complete
    other = "0" * 16
    (root / "partial" / f"{other}.pt").write_bytes(b"resumable")  # a run not yet complete: kept
    scores = cfg.out / "scores"
    (scores / ".noise=0.1_seed0.csv.ab12").write_text("torn")  # not in the folder's record: not ours to delete
    staging = cfg.out.parent / f".{cfg.out.name}.tmp-999999-zz"  # staging of a dead process
    staging.mkdir()
    (staging / STAGING_MARKER).write_text("")
    lookalike = cfg.out.parent / f".{cfg.out.name}.tmp-999999-yy"  # the name alone proves nothing
    lookalike.mkdir()
    result = Experiment(cfg).run()
    assert result.trained == [] and result.reused == [spec.label()]
    assert sorted(_leftovers(exp.store)) == [f"{other}.pt"]
    assert [p.name for p in scores.iterdir() if p.name.startswith(".")] == [".noise=0.1_seed0.csv.ab12"]
    assert [p.name for p in cfg.out.parent.iterdir() if p.name.startswith(f".{cfg.out.name}")] == [lookalike.name]


def test_a_live_writers_temp_folder_is_left_alone(tmp_path, base_spec) -> None:
    store = RunStore(tmp_path / "store")
    tmp = store.root / "runs" / f".tmp-{base_spec.digest()}-live"
    tmp.mkdir()
    other = RunStore(tmp_path / "store")  # another process's view: its own lock object
    with other.lock(base_spec):
        assert store.clean() == [] and tmp.exists()
    assert store.clean() == [tmp.name] and not tmp.exists()


# --- checkpoints -----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   # what torch's zip writer raises on a full disk
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")])
def test_failed_checkpoint_write_warns_and_the_run_completes(make_config, monkeypatch, error: Exception) -> None:
    cfg = make_config(epochs=4, checkpoint_every_s=1e-6)
    real_save = torch.save
    calls = []

    def failing_save(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # inside the second checkpoint write, after a partial file exists
            Path(path).write_bytes(b"partial")
            raise error
        real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    exp = Experiment(cfg)
    with pytest.warns(UserWarning, match="cannot write a checkpoint"):
        result = exp.run()
    assert len(result.trained) == 1 and not result.failures and len(calls) == 3
    assert _leftovers(exp.store) == []  # the torn temp removed, the last checkpoint cleared once stored


def test_resume_skips_a_torn_checkpoint_left_by_a_kill(make_config) -> None:
    cfg = make_config(epochs=2)
    exp = Experiment(cfg)
    (spec,) = exp.plan.runs
    exp.store.create()  # an experiment makes its store only when training starts
    (exp.store.root / "partial" / f"{spec.digest()}.pt").write_bytes(b"torn by a kill")
    with pytest.warns(UserWarning, match="unreadable"):
        result = exp.run()
    assert result.trained == [spec.label()] and _leftovers(exp.store) == []


# --- unwritable store and --out: one line, before training --------------------------------------------


def _refuse_writes_under(monkeypatch, folder: Path) -> None:
    """As a read-only folder would (the suite may run as root, which chmod does not stop)."""
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("which", ["store", "out"])
def test_unwritable_store_or_out_is_one_line_before_training(tmp_path, monkeypatch, capsys, which: str) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "out").mkdir()
    _refuse_writes_under(monkeypatch, tmp_path / which)
    trained = []
    monkeypatch.setattr(jobs, "train_run", lambda *a, **k: trained.append(a))
    code = main(["run", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates", "0.1",
                 "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "out"),
                 "--store", str(tmp_path / "store"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and trained == []
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not writable" in lines[0] and str(tmp_path / which) in lines[0]
    assert "Traceback" not in err
    assert not any((tmp_path / "store").rglob("manifest.json")) and not any((tmp_path / "out").iterdir())


def test_output_write_failure_after_training_keeps_the_runs(make_config, monkeypatch) -> None:
    cfg = make_config(epochs=2)
    import harness.outputs as outputs

    def full(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(outputs, "atomic_write_text", full)
    exp = Experiment(cfg)
    with pytest.raises(StorageError, match="No space left on device.*kept in the store"):
        exp.run()
    monkeypatch.undo()
    assert not cfg.out.exists() and not list(cfg.out.parent.glob(f".{cfg.out.name}*"))
    assert len(_entries(exp.store)) == 1
    assert Experiment(cfg).run().trained == []


# --- Ctrl-C ------------------------------------------------------------------------------------------


def test_ctrl_c_inside_a_job_keeps_the_store_consistent(make_config, monkeypatch) -> None:
    cfg = _two_runs(make_config)
    real = jobs.train_run
    calls = []

    def interrupted_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(jobs, "train_run", interrupted_second)
    exp = Experiment(cfg)
    with pytest.raises(Interrupted) as info:
        exp.run()
    assert info.value.kept_runs == 1 and "1 run kept in the store, rerun to resume" in str(info.value)
    assert len(_entries(exp.store)) == 1 and _leftovers(exp.store) == []
    assert not cfg.out.exists()
    for spec in exp.plan.runs:  # no lock left held: another process could take each at once
        with RunStore(cfg.store).lock(spec).acquire(timeout=0):
            pass
    monkeypatch.undo()
    assert len(Experiment(cfg).run().trained) == 1


def test_ctrl_c_counts_the_partly_trained_runs_it_checkpointed(make_config, monkeypatch) -> None:
    """Before: "0 runs kept in the store" although the interrupted run's checkpoint was there to
    resume from; the message undersold what a rerun keeps."""
    cfg = _two_runs(make_config)

    def checkpointed_then_interrupted(spec, *a, **k):
        RunStore(cfg.store).checkpoint_path(spec).write_bytes(b"a checkpoint")  # as train_run's callback leaves it
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "train_run", checkpointed_then_interrupted)
    with pytest.raises(Interrupted) as info:
        Experiment(cfg).run()
    assert (info.value.kept_runs, info.value.checkpointed) == (0, 1)
    assert str(info.value) == ("interrupted; 0 runs kept in the store and 1 partly trained run checkpointed, "
                               "rerun to resume")


# --- all-NaN proxies -----------------------------------------------------------------------------------


def test_a_proxy_with_only_nan_scores_is_a_failure(make_config, monkeypatch) -> None:
    monkeypatch.setattr(CSL, "score", lambda self, ctx: np.full(len(ctx.labels), np.nan))
    result = Experiment(make_config(epochs=1, proxies="csl,aum")).run()
    assert any("csl" in f and "every score is NaN" in f for f in result.failures)
    assert set(result.raw.proxy) == {"aum"}


# --- --out: never two experiments in one folder -----------------------------------------------------------


def test_out_of_another_experiment_is_refused_before_training(make_config, monkeypatch) -> None:
    Experiment(make_config(epochs=1, proxies="csl", noise_rates=(0.05, 0.1))).run()
    trained = []
    monkeypatch.setattr(jobs, "train_run", lambda *a, **k: trained.append(a))
    # the fix says what --overwrite does: the other experiment's outputs go (docs audit: it said they stayed)
    with pytest.raises(HarnessError, match="another experiment.*--overwrite.*that experiment's outputs go, files of "
                                           "yours stay unless a new output has their name"):
        Experiment(make_config(epochs=1, proxies="aum"))
    assert trained == []


def test_overwrite_replaces_every_file_of_the_other_experiment(make_config) -> None:
    first = make_config(epochs=1, proxies="csl", noise_rates=(0.05, 0.1))
    Experiment(first).run()
    assert (first.out / "scores" / "noise=0.05_seed0.csv").exists()
    second = make_config(epochs=1, proxies="aum", overwrite=True)
    result = Experiment(second).run()
    assert sorted(p.name for p in (second.out / "scores").iterdir()) == ["noise=0.1_seed0.csv"]
    assert list(pd.read_csv(second.out / "scores" / "noise=0.1_seed0.csv").columns)[-1] == "aum"
    summary = json.loads((second.out / "summary.json").read_text())
    assert summary["outputs"]["scores"] == ["scores/noise=0.1_seed0.csv"] and "figures" not in summary["outputs"]
    pd.testing.assert_frame_equal(result.scores["noise=0.1_seed0"],
                                  pd.read_csv(second.out / "scores" / "noise=0.1_seed0.csv"), check_dtype=False)
    # the same experiment again owns the folder: no --overwrite needed
    Experiment(replace(second, overwrite=False)).run()


def test_foreign_files_survive_overwrite(make_config) -> None:
    cfg = make_config(epochs=1)
    cfg.out.mkdir(parents=True)
    (cfg.out / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="--overwrite") as refused:
        Experiment(cfg)
    assert "(files of yours stay unless a new output has their name)" in str(refused.value)  # no experiment's
    Experiment(replace(cfg, overwrite=True)).run()
    assert (cfg.out / "notes.txt").read_text() == "mine" and (cfg.out / "leaderboard.csv").exists()


def test_no_out_writes_nothing(make_config) -> None:
    cfg = make_config(epochs=1, out=None)
    result = Experiment(cfg).run()
    assert list(result.scores) == ["noise=0.1_seed0"] and len(result.raw) > 0
    assert not (Path(cfg.store).parent / "out").exists()
