"""A memprox upgraded in the middle of a project, pointed at the store the old version wrote.

Stored runs are reused by address and recorder key. A recorder whose code changes what it writes
down must not have its old arrays reused beside new ones: its class `version` enters its key
(`harness.recorders.base`), so a bump re-records, and version 1 keeps every key (and store) as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.experiment import Experiment
from harness.recorders import EVAL_LAST, RECORDERS, Recorder, RecorderRequest, register_recorder
from harness.recorders.input_grads import input_grads_request
from harness.recorders.train_pass import TrainLoss
from harness.registry import Registry

#: A small experiment: 400 samples, 50 bootstrap resamples (what is tested is which runs train).
FAST = {"subset": 400, "bootstrap": 50}


def _entry(store: Path) -> Path:
    (entry,) = (store / "runs").iterdir()
    return entry


def _files(entry: Path) -> set[str]:
    return {p.name for p in entry.iterdir() if p.suffix == ".npy"}


def test_version_one_keeps_every_key_written_before_versions_existed() -> None:
    """Stores written before recorder versions existed stay valid: the key of a version-1 recorder
    is exactly its old key. No built-in recorder is bumped yet (a deliberate bump, which retrains
    every stored run carrying it, updates the expected versions here)."""
    assert {name: cls.version for name, cls in RECORDERS.items()} == dict.fromkeys(RECORDERS, 1)
    assert RecorderRequest.of("train_loss").key == "train_loss"
    assert EVAL_LAST.key == "eval_pass[epochs=last]"
    assert input_grads_request(every=3).key == "input_grads[every=3]"
    assert RecorderRequest.of("not_registered", k=1).key == "not_registered[k=1]"


def test_a_bumped_recorder_is_recorded_again_not_reused(make_config, monkeypatch) -> None:
    """The old code reused the stored train_loss arrays after a change to what train_loss records:
    the leaderboard then mixed numbers of the old definition with the new. A bumped version
    retrains the run once, keeps the other recorders it carried, and replaces the old record."""
    cfg = make_config(proxies="csl,forgetting", epochs=2, **FAST)
    first = Experiment(cfg).run()
    assert len(first.trained) == 1 and not first.failures
    entry = _entry(cfg.store)
    assert {"train_loss.loss.npy", "train_correct.correct.npy"} <= _files(entry)

    monkeypatch.setattr(TrainLoss, "version", 2)
    assert RecorderRequest.of("train_loss").key == "train_loss@v2"
    second = Experiment(make_config(proxies="csl,forgetting", epochs=2, overwrite=True, **FAST)).run()
    assert second.reused == [] and len(second.trained) == 1 and not second.failures
    files = _files(_entry(cfg.store))
    assert "train_loss@v2.loss.npy" in files and "train_loss.loss.npy" not in files
    assert "train_correct.correct.npy" in files  # kept: its version did not change
    # the same code recorded both, so the values agree; what differs is that they were recorded again
    np.testing.assert_array_equal(second.scores["noise=0.1_seed0"]["csl"], first.scores["noise=0.1_seed0"]["csl"])

    third = Experiment(make_config(proxies="csl,forgetting", epochs=2, overwrite=True, **FAST)).run()
    assert third.trained == [] and len(third.reused) == 1


def test_a_checkpoint_of_the_older_version_is_not_resumed(make_config, monkeypatch) -> None:
    """An interrupted run's checkpoint holds half-filled buffers: resumed under a bumped recorder it
    would fill the other half with the new definition. Its keys no longer match, so it restarts."""
    cfg = make_config(epochs=2)
    exp = Experiment(cfg)
    _, todo = exp.pending()
    ((spec, requests),) = todo
    keys = sorted(r.key for r in requests)
    exp.store.create()
    exp.store.save_checkpoint(spec, {"epoch": 1}, keys)
    assert exp.store.load_checkpoint(spec, keys) is not None
    monkeypatch.setattr(TrainLoss, "version", 2)
    assert exp.store.load_checkpoint(spec, sorted(r.key for r in requests)) is None


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, True])
def test_a_recorder_version_that_no_key_could_match_is_refused(monkeypatch, version) -> None:
    """A version of 0, a string or a float would make keys (`name@v0`, `name@v2.0`) that no store
    holds or ever could: refused at registration, naming the class."""
    monkeypatch.setattr("harness.recorders.base.RECORDERS", Registry("recorder"))

    class Odd(Recorder):
        name = "odd_upgrade7"

    Odd.version = version  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"recorder Odd.version must be an int >= 1"):
        register_recorder(Odd)


_TRACKER_AFTER_A_BUMP = """
import json, sys
import torch
from harness.recorders import RECORDERS
for name in ("train_loss", "train_correct"):
    RECORDERS[name].version = 2  # as a future change to what they record would
from harness.tracker import SampleTracker
from harness.tracker.selection import LOSS_KEY, TRAIN_KEYS
out = {"keys": [LOSS_KEY, *TRAIN_KEYS]}
logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
for mode in ("all", "running"):
    t = SampleTracker(4, running_sums=mode == "running") if mode == "running" else SampleTracker(4)
    for epoch in range(2):
        t.update(torch.arange(4), logits=logits, labels=torch.tensor([0, 1, 1, 0]))
        t.end_epoch()
    out[mode] = t.scores().drop(columns=["label"]).to_dict(orient="list")
json.dump(out, sys.stdout)
"""


def test_the_tracker_follows_a_bumped_training_pass_recorder() -> None:
    """The tracker looked its training-pass recorders up by bare name ("train_loss"): after a
    version bump every tracker would fail with "csl needs train_loss@v2". Keys now come from the
    requests, so a bump changes nothing a tracker user sees (same scores as version 1)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    bumped = subprocess.run([sys.executable, "-c", _TRACKER_AFTER_A_BUMP], cwd=root, capture_output=True, text=True,
                            timeout=120)
    assert bumped.returncode == 0, bumped.stderr[-2000:]
    got = json.loads(bumped.stdout)
    assert got["keys"][0] == "train_loss@v2" and "train_correct@v2" in got["keys"]
    # the same script without the bump, in this process (its recorders are at version 1): a second process start
    # was half of this test
    import contextlib
    import io

    unbumped = _TRACKER_AFTER_A_BUMP.replace("    RECORDERS[name].version = 2", "    pass")
    assert unbumped != _TRACKER_AFTER_A_BUMP
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(unbumped, "<tracker without a bump>", "exec"), {})
    expected = json.loads(printed.getvalue())
    assert expected["keys"][0] == "train_loss"
    assert got["all"] == expected["all"] and got["running"] == expected["running"]
    assert expected["running"]["csl"] == pytest.approx(expected["all"]["csl"])
