"""Review 7 of the batched ensemble: a chunk checkpoints its members at epoch ends and resumes from
them bit for bit after Ctrl-C or kill -9 (harness/ensemble_checkpoint.py), ignores with a warning
any checkpoint that is not one round of exactly this chunk, and its training clock leaves out its
first step's one-time warm-up as train_run's does."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import harness.checkpoints as checkpoints_module
import harness.ensemble as ensemble_module
from baselines.stability import stability_specs
from harness.datasets import Dataset, load_dataset
from harness.ensemble import train_members
from harness.ensemble_checkpoint import ChunkCheckpoints, ChunkProgress
from harness.errors import RunFailed
from harness.jobs import DataSource, Job, JobResult, run_job
from harness.model_registry import MODELS, ModelEntry
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe
from harness.recorders import EVAL_LAST
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore
from harness.training import train_run

REPO = Path(__file__).resolve().parents[1]
KEYS = [EVAL_LAST.key]
RECIPE = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=4,
                schedule="cosine", milestones=(), augment=False)


def _specs(data: PreparedData, k: int = 3, recipe: Recipe = RECIPE, model: str = "mlp") -> list[RunSpec]:
    return stability_specs(RunSpec(data=data.spec, model=model, recipe=recipe, seed=0), k, 0.7)


def _train(specs: list[RunSpec], data: PreparedData, store: RunStore | None) -> tuple[list, ChunkCheckpoints | None]:
    if store is None:
        return train_members(specs, data, [EVAL_LAST], progress=False), None
    checkpoints = ChunkCheckpoints(store, KEYS, 0.0)
    return train_members(specs, data, [EVAL_LAST], progress=False, checkpoints=checkpoints), checkpoints


def _interrupt_after(monkeypatch, at: int) -> None:
    """Ctrl-C (KeyboardInterrupt) right after the chunk's checkpoint of epoch `at`."""
    real = ChunkCheckpoints.save

    def save(self, specs, stacked, progress) -> None:
        real(self, specs, stacked, progress)
        if progress.epoch == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(ChunkCheckpoints, "save", save)


def _interrupted(monkeypatch, specs: list[RunSpec], data: PreparedData, store: RunStore, at: int) -> None:
    with monkeypatch.context() as m:
        _interrupt_after(m, at)
        with pytest.raises(KeyboardInterrupt):
            _train(specs, data, store)


def _assert_same(a, b) -> None:
    """Bit for bit, apart from seconds."""
    assert set(a.arrays) == set(b.arrays)
    for key in a.arrays:
        assert set(a.arrays[key]) == set(b.arrays[key])
        for name, arr in a.arrays[key].items():
            assert arr.dtype == b.arrays[key][name].dtype
            np.testing.assert_array_equal(arr, b.arrays[key][name], err_msg=f"{key}.{name}")
    assert (a.train_flops, a.recorder_flops, a.train_acc, a.test_acc) == (
        b.train_flops, b.recorder_flops, b.train_acc, b.test_acc)
    assert a.history == b.history


def _partial(store: RunStore) -> list[str]:
    return sorted(p.name for p in (store.root / "partial").iterdir())


def _bn_mlp(shape: tuple[int, ...], classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, classes))


@pytest.fixture
def bn_mlp(monkeypatch) -> str:
    monkeypatch.setitem(MODELS._items, "bn_mlp", ModelEntry("bn_mlp", "an MLP with batch norm", _bn_mlp))
    return "bn_mlp"


@pytest.fixture(scope="module")
def pixels() -> PreparedData:
    """16x16 images: big enough for the crop and flip augmentation (digits' 8x8 are not)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(96) % 3
    return prepare(DataSpec(dataset="pixels"), Dataset("pixels", x, y, x[:8], y[:8], ("a", "b", "c"), 96),
                   torch.device("cpu"))


@pytest.mark.parametrize("case", ["sgd", "adam_batchnorm", "augment"])
def test_an_interrupted_chunk_resumes_bit_for_bit(case, digits_noisy, pixels, bn_mlp, tmp_path, monkeypatch,
                                                  capfd) -> None:
    """Before: an ensemble chunk saved nothing until it ended, so Ctrl-C or a kill lost all its
    epochs. Now each epoch end writes one file per member (params, batch-norm buffers, momenta or
    Adam moments and step, schedule, history); resumed, the chunk ends exactly as one never stopped."""
    data, recipe, model = digits_noisy, RECIPE, "mlp"
    if case == "adam_batchnorm":
        recipe, model = replace(RECIPE, optimizer="adam", lr=3e-3, schedule="onecycle"), bn_mlp
    if case == "augment":
        data, recipe = pixels, replace(RECIPE, augment=True, batch_size=16)
    specs = _specs(data, 3, recipe, model)
    reference, _ = _train(specs, data, None)
    store = RunStore(tmp_path / "store")
    _interrupted(monkeypatch, specs, data, store, at=2)
    assert _partial(store) == sorted(f"{s.digest()}.pt" for s in specs)
    epochs: list[int] = []
    real_close = ensemble_module.close_epoch
    monkeypatch.setattr(ensemble_module, "close_epoch", lambda e, *a: epochs.append(e) or real_close(e, *a))
    capfd.readouterr()
    resumed, checkpoints = _train(specs, data, store)
    assert epochs == [3, 4]  # epochs 1-2 came from the checkpoints
    assert checkpoints.resumed == dict.fromkeys(specs, 2)
    assert capfd.readouterr().err.splitlines() == [
        f"resuming ensemble of 3 ({specs[0].label()}, ...) from its checkpoints at epoch 2 of 4"]
    for a, b in zip(resumed, reference, strict=True):
        _assert_same(a, b)


def _job(specs: list[RunSpec], root: Path | None, every_s: float = 1e-9) -> Job:
    return Job(specs=tuple(specs), requests=(EVAL_LAST,), engine="ensemble", source=DataSource("digits"),
               checkpoint_root=str(root) if root else None, checkpoint_every_s=every_s)


def _manifest(result: JobResult, spec: RunSpec) -> dict:
    """A stored manifest's fields, apart from the clocks (and when it was made)."""
    arrays, manifest = result.outputs[spec]
    fields = asdict(manifest)
    for name in ("train_seconds", "wall_seconds", "created"):
        fields.pop(name)
    for record in fields["recorders"].values():
        record.pop("seconds")
    return fields


def _store_all(store: RunStore, result: JobResult) -> None:
    """What the runner does with a job's result."""
    for spec, (arrays, manifest) in result.outputs.items():
        store.put(spec, arrays, manifest)


@pytest.fixture(scope="module")
def digits_job_specs() -> list[RunSpec]:
    data = DataSpec(dataset="digits", dataset_sha=load_dataset("digits").fingerprint)
    return stability_specs(RunSpec(data=data, model="mlp", recipe=RECIPE, seed=0), 3, 0.7)


@pytest.fixture(scope="module")
def digits_reference(digits_job_specs) -> JobResult:
    return run_job(_job(digits_job_specs, None))


def _assert_job_matches(result: JobResult, reference: JobResult) -> None:
    assert not result.failures and set(result.outputs) == set(reference.outputs)
    for spec in reference.outputs:
        for key, named in reference.outputs[spec][0].items():
            for name, arr in named.items():
                np.testing.assert_array_equal(result.outputs[spec][0][key][name], arr)
        assert _manifest(result, spec) == _manifest(reference, spec)


_CHILD = """
import pickle, sys, time
from harness.ensemble_checkpoint import ChunkCheckpoints
from harness.jobs import run_job

real = ChunkCheckpoints.save

def save(self, specs, stacked, progress):
    real(self, specs, stacked, progress)
    if progress.epoch == 2:  # killed here, at the latest 60 s on
        print("checkpointed", flush=True)
        time.sleep(60)

ChunkCheckpoints.save = save
with open(sys.argv[1], "rb") as f:
    run_job(pickle.load(f))
"""


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGKILL],
                         ids=["sigint", "sigkill"])
def test_a_killed_ensemble_job_resumes_and_stores_what_an_uninterrupted_one_does(
        sig, digits_job_specs, digits_reference, tmp_path, capfd) -> None:
    """A worker process training an ensemble chunk, stopped by Ctrl-C or kill -9 after its epoch-2
    checkpoint: the rerun says it resumes, trains epochs 3-4 only, and its arrays and manifests
    are the uninterrupted job's (apart from seconds); once stored, nothing is left in partial/."""
    root = tmp_path / "store"
    store = RunStore(root)
    job_file = tmp_path / "job.pkl"
    job_file.write_bytes(pickle.dumps(_job(digits_job_specs, root)))
    (tmp_path / "child.py").write_text(textwrap.dedent(_CHILD))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(job_file)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "checkpointed"
        child.send_signal(sig)
        assert child.wait(timeout=30) != 0
    finally:
        child.kill()
        child.wait()
    assert _partial(store) == sorted(f"{s.digest()}.pt" for s in digits_job_specs)
    capfd.readouterr()
    result = run_job(_job(digits_job_specs, root))
    assert result.resumed == dict.fromkeys(digits_job_specs, 2)
    assert f"from its checkpoints at epoch 2 of {RECIPE.epochs}" in capfd.readouterr().err
    _assert_job_matches(result, digits_reference)
    _store_all(store, result)
    assert _partial(store) == [] and store.clean() == []


def test_checkpoints_of_other_chunk_members_are_ignored_with_a_warning(digits_noisy, tmp_path, monkeypatch) -> None:
    """The experiment rerun with another K (or chunking) makes a chunk of other members: their rows
    must never be mixed into this chunk. Trained from its start instead, bit for bit."""
    specs = _specs(digits_noisy, 3)
    store = RunStore(tmp_path / "store")
    _interrupted(monkeypatch, specs, digits_noisy, store, at=2)
    reference, _ = _train(specs[:2], digits_noisy, None)
    with pytest.warns(UserWarning, match="written by a chunk of other members.*training the chunk from its start"):
        outs, checkpoints = _train(specs[:2], digits_noisy, store)
    assert checkpoints.resumed == {}
    for a, b in zip(outs, reference, strict=True):
        _assert_same(a, b)


def _flip_bytes(path: Path) -> None:
    """A byte flipped at every eighth of the file: some land in tensor data (a zip CRC catches them)."""
    raw = bytearray(path.read_bytes())
    for i in range(1, 8):
        raw[i * len(raw) // 8] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flipped_byte", "another_specs_file", "one_member_missing", "torn_round"])
def test_a_damaged_or_incomplete_round_retrains_the_chunk(damage, digits_noisy, tmp_path, monkeypatch) -> None:
    """A member whose file is damaged, is another run's, or is missing, or a kill between the
    renames of a round (two members at epoch 3, one at 2): one warning, and the chunk trains from
    its start."""
    specs = _specs(digits_noisy, 3)
    store = RunStore(tmp_path / "store")
    _interrupted(monkeypatch, specs, digits_noisy, store, at=2)
    paths = [store.checkpoint_path(s) for s in specs]
    if damage == "flipped_byte":
        _flip_bytes(paths[1])
    elif damage == "another_specs_file":
        paths[1].write_bytes(paths[0].read_bytes())
    elif damage == "one_member_missing":
        paths[2].unlink()
    else:
        with monkeypatch.context() as m:
            _stop_at_call(m, os, "replace", 3)  # the third rename of the round of epoch 3
            with pytest.raises(KeyboardInterrupt):
                _train(specs, digits_noisy, store)
    reference, _ = _train(specs, digits_noisy, None)
    why = {"torn_round": "of different epochs"}.get(damage, "only 2 of 3 members have a readable one")
    with pytest.warns(UserWarning, match=why):
        outs, checkpoints = _train(specs, digits_noisy, store)
    assert checkpoints.resumed == {}
    for a, b in zip(outs, reference, strict=True):
        _assert_same(a, b)


def _stop_at_call(monkeypatch, owner, name: str, n: int) -> None:
    """Ctrl-C at the `n`-th call of `owner.name`."""
    real, calls = getattr(owner, name), []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, stop)


def test_a_kill_while_a_round_is_written_keeps_the_last_round(digits_noisy, tmp_path, monkeypatch) -> None:
    """Members' files were written one after another, each replacing its last round's at once: a kill
    during any write left a torn round and lost the whole chunk. Now a round is written in full
    under temporary names first; a kill then leaves the last round (and no temporary file)."""
    specs = _specs(digits_noisy, 3)
    store = RunStore(tmp_path / "store")
    _interrupted(monkeypatch, specs, digits_noisy, store, at=2)
    with monkeypatch.context() as m:
        _stop_at_call(m, checkpoints_module, "_torch_save", 3)  # writing the third file of epoch 3's round
        with pytest.raises(KeyboardInterrupt):
            _train(specs, digits_noisy, store)
    assert _partial(store) == sorted(f"{s.digest()}.pt" for s in specs)
    reference, _ = _train(specs, digits_noisy, None)
    outs, checkpoints = _train(specs, digits_noisy, store)
    assert checkpoints.resumed == dict.fromkeys(specs, 2)
    for a, b in zip(outs, reference, strict=True):
        _assert_same(a, b)


def test_members_checkpoint_and_a_single_runs_are_not_taken_for_each_other(digits_noisy, digits_job_specs,
                                                                             tmp_path) -> None:
    """A spec trains batched on one device type and alone on another (a convolutional model: GPU vs
    CPU), so one engine can meet the other's checkpoint: the single engine crashed on a member's
    (KeyError 'model' in train_run); now either is ignored with a warning and the run restarts."""
    spec = digits_job_specs[0]
    store = RunStore(tmp_path / "store")
    data = prepare(spec.data, load_dataset("digits"), torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):  # a member's checkpoint of epoch 2
        with pytest.MonkeyPatch.context() as m:
            _interrupt_after(m, 2)
            _train([spec], data, store)
    single = Job(specs=(spec,), requests=(EVAL_LAST,), engine="single", source=DataSource("digits"),
                 checkpoint_root=str(store.root), checkpoint_every_s=1e9)
    with pytest.warns(UserWarning, match="as a member of a batched ensemble.*restarting that run"):
        result = run_job(single)
    assert result.resumed == {}
    alone = train_run(spec, data, [EVAL_LAST], progress=False)
    np.testing.assert_array_equal(result.outputs[spec][0][KEYS[0]]["loss"], alone.arrays[KEYS[0]]["loss"])
    # and a single run's checkpoint in a member's place
    train_run(spec, data, [EVAL_LAST], progress=False, checkpoint_every_s=0,
              checkpoint=lambda state: store.save_checkpoint(spec, state, KEYS))
    with pytest.warns(UserWarning, match="of a run trained alone"):
        _, checkpoints = _train([spec], data, store)
    assert checkpoints.resumed == {}


def test_failed_members_stay_failed_across_a_resume_and_leave_no_checkpoint(digits_noisy, tmp_path,
                                                                            monkeypatch) -> None:
    """Members whose loss became non-finite in epoch 1 are failures after the resume too (with the
    epoch), and their files, which no store entry will replace, are removed when the chunk ends."""
    specs = _specs(digits_noisy, 2, replace(RECIPE, lr=1e6, momentum=0.0))
    store = RunStore(tmp_path / "store")
    _interrupted(monkeypatch, specs, digits_noisy, store, at=2)
    outs, checkpoints = _train(specs, digits_noisy, store)
    assert checkpoints.resumed == dict.fromkeys(specs, 2)
    assert all(isinstance(o, RunFailed) and "non-finite in epoch 1" in str(o) for o in outs)
    assert _partial(store) == []


def test_the_charge_leaves_out_the_warm_up_and_bills_its_samples_at_the_others_rate() -> None:
    run = ChunkProgress(epoch=2, history=[[]], samples_seen=1000, seconds=12.0, warm_seconds=10.0, warm_samples=200)
    assert run.charged_seconds() == pytest.approx(2.0 * 1000 / 800)
    assert ChunkProgress(epoch=1, history=[[]], samples_seen=100, seconds=3.0, warm_seconds=3.0,
                         warm_samples=100).charged_seconds() == 3.0  # nothing else to bill it by


WARM_UP = 2.0  # seconds of a simulated first step (a GPU's library set-up and kernel choice)


@pytest.mark.parametrize("resumed", [False, True])
def test_the_first_step_of_an_ensemble_is_off_the_clock(resumed, digits_noisy, tmp_path, monkeypatch) -> None:
    """The ensemble charged every member its share of the first step, one-time warm-up included,
    so batched members looked dearer than the same runs alone (train_run already bills the first
    step at the mean rate). The warm-up of a resumed process is left out too."""
    specs = _specs(digits_noisy, 2, replace(RECIPE, epochs=2))
    store = RunStore(tmp_path / "store") if resumed else None
    if resumed:
        _interrupted(monkeypatch, specs, digits_noisy, store, at=1)
    real_autocast, calls = ensemble_module.autocast, []

    def slow_first(*args, **kwargs):  # the training forward's autocast: entered once a step
        if not calls:
            time.sleep(WARM_UP)
        calls.append(1)
        return real_autocast(*args, **kwargs)

    monkeypatch.setattr(ensemble_module, "autocast", slow_first)
    t0 = time.perf_counter()
    outs, _ = _train(specs, digits_noisy, store)
    wall = time.perf_counter() - t0
    charged = sum(o.train_seconds for o in outs)
    assert 0 < charged < wall - WARM_UP + 0.5 and charged < WARM_UP / 2


def test_a_round_that_cannot_be_written_is_a_warning_and_training_goes_on(digits_noisy, tmp_path,
                                                                          monkeypatch) -> None:
    """A full disk while a round is written: one warning naming the chunk, no temporary file left,
    and the chunk trains on to the uninterrupted result."""
    specs = _specs(digits_noisy, 2)
    store = RunStore(tmp_path / "store")
    real, calls = checkpoints_module._torch_save, []

    def full_once(blob, path) -> None:
        calls.append(1)
        if len(calls) == 3:  # the first file of the round of epoch 2
            raise OSError(28, "No space left on device", str(path))
        real(blob, path)

    monkeypatch.setattr(checkpoints_module, "_torch_save", full_once)
    with pytest.warns(UserWarning, match=r"cannot write a checkpoint of ensemble of 2 .*No space left on device"):
        outs, _ = _train(specs, digits_noisy, store)
    assert len(calls) == 5  # the rounds of epochs 1 and 3 whole, that of 2 stopped at its first file
    assert _partial(store) == sorted(f"{s.digest()}.pt" for s in specs)
    reference, _ = _train(specs, digits_noisy, None)
    for a, b in zip(outs, reference, strict=True):
        _assert_same(a, b)
