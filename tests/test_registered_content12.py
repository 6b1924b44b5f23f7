"""A dataset or a model registered outside memprox (a script, a notebook) is addressed by what it
is, not only by its name (found by a Python-API walkthrough): a notebook cell re-run with other data
or a model of other width got the stored runs of the old one back as "reused", with the old numbers.
memprox's own datasets and models keep their addresses exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from harness.datasets import DATASETS, Dataset, LoadRequest, load_dataset, register_dataset
from harness.experiment import Experiment
from harness.model_registry import MODELS, model_fingerprint, register_model
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec

DATA = {"shift": 0.0}


def _blobs(request: LoadRequest) -> Dataset:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 260)
    x = (rng.normal(size=(260, 6)) + 3 * np.eye(4, 6)[y] + DATA["shift"]).astype(np.float32)
    t = torch.from_numpy
    return Dataset(name="blobs12", x_train=t(x[:200, :, None, None]), y_train=t(y[:200]),
                   x_test=t(x[200:, :, None, None]), y_test=t(y[200:]), classes=("a", "b", "c", "d"),
                   full_train_size=200)


@pytest.fixture(autouse=True)
def blobs12():
    """Registered for this module's tests only: another test file in the process lists every dataset."""
    register_dataset("blobs12", "four blobs whose centre a test moves")(_blobs)
    yield
    DATASETS._items.pop("blobs12", None)
    MODELS._items.pop("tiny12", None)


def _register_width(width: int) -> None:
    """A notebook cell that defines `tiny12` again, with another width (exec: no source file)."""
    code = (f"def tiny12(shape, classes):\n    c, h, w = shape\n    return nn.Sequential(nn.Flatten(), "
            f"nn.Linear(c * h * w, {width}), nn.ReLU(), nn.Linear({width}, classes))\n")
    scope: dict = {"nn": nn, "__name__": __name__}
    exec(compile(code, "<notebook cell>", "exec"), scope)
    register_model("tiny12", "a width a test changes")(scope["tiny12"])


def test_a_registered_dataset_gets_a_content_fingerprint_and_a_builtin_keeps_none() -> None:
    first = load_dataset("blobs12").fingerprint
    assert first and load_dataset("blobs12").fingerprint == first
    DATA["shift"] = 0.5
    try:
        assert load_dataset("blobs12").fingerprint != first
    finally:
        DATA["shift"] = 0.0
    assert load_dataset("digits").fingerprint == ""
    assert DATASETS["blobs12"].load.__module__ == __name__


def test_edited_data_under_the_same_name_trains_again(make_config) -> None:
    def run():
        return Experiment(make_config(dataset="blobs12", tasks=("mislabeled",), noise_rates=(0.1,),
                                      bootstrap=0)).run()

    first = run()
    assert first.trained and not first.reused
    again = run()
    assert again.reused and not again.trained
    DATA["shift"] = 0.5
    try:
        moved = run()
    finally:
        DATA["shift"] = 0.0
    assert moved.trained and not moved.reused


def test_a_redefined_model_under_the_same_name_trains_again(make_config) -> None:
    def run():
        return Experiment(make_config(model="tiny12", tasks=("mislabeled",), subset=200, bootstrap=0)).run()

    _register_width(16)
    narrow = model_fingerprint("tiny12")
    first = run()
    assert first.trained and not first.reused
    _register_width(16)  # the same cell run again: the same model
    assert model_fingerprint("tiny12") == narrow
    assert run().reused
    _register_width(256)
    assert model_fingerprint("tiny12") != narrow
    wide = run()
    assert wide.trained and not wide.reused


def test_memprox_models_keep_their_addresses() -> None:
    import harness.models  # noqa: F401  (registers them)

    assert all(model_fingerprint(name) == "" for name in MODELS)
    spec = RunSpec(DataSpec("digits"), "mlp", Recipe())
    assert "model_sha" not in json.dumps(spec.to_dict() | {"model_sha": None}).replace('"model_sha": null', "")
    assert spec.digest() == RunSpec(DataSpec("digits"), "mlp", Recipe(), model_sha="").digest()
    assert RunSpec(DataSpec("digits"), "mlp", Recipe(), model_sha="abc").digest() != spec.digest()
