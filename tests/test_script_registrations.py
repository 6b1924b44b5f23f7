"""A dataset or model registered in the user's script is known to that process only: executors whose
workers import memprox afresh (the default pool, Ray) must refuse it before anything trains, not
fail every run in its worker with "unknown dataset" and return an empty leaderboard."""

from __future__ import annotations

import pytest
from torch import nn

from harness.datasets import DATASETS, Dataset, DatasetLoader, LoadRequest, load_dataset
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.model_registry import MODELS, ModelEntry
from harness.models import build_model


def _load_script_digits(request: LoadRequest) -> Dataset:
    """digits under another name, as a user's script would register it."""
    ds = load_dataset("digits", subset=request.subset)
    return Dataset(name="script_digits", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                   y_test=ds.y_test, classes=ds.classes, full_train_size=ds.full_train_size)


def _script_mlp(input_shape, num_classes: int) -> nn.Module:
    return build_model("mlp", input_shape, num_classes)


@pytest.fixture
def script_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DATASETS._items, "script_digits", DatasetLoader(_load_script_digits, "digits again"))
    monkeypatch.setitem(MODELS._items, "script_mlp", ModelEntry("script_mlp", "mlp again", _script_mlp))


@pytest.mark.parametrize(("overrides", "message"), [
    # registered by a fixture, not when the module is imported: a fresh process checks, and does not have it
    ({"dataset": "script_digits"}, r"dataset 'script_digits' is registered in this process only \(by "
                                   r"test_script_registrations, which does not register it when imported\)"
                                   r".*memprox.datasets"),
    ({"model": "script_mlp"}, r"model 'script_mlp' is registered in this process only \(by test_script_registrations, "
                              r"which does not register it when imported\)"),
])
def test_a_pool_refuses_what_only_this_process_registered(make_config, script_registrations, overrides,
                                                          message: str) -> None:
    cfg = make_config(executor="local", workers=1, **overrides)
    with pytest.raises(HarnessError, match=message):
        Experiment(cfg).run()
    runs = cfg.store / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "nothing trains"


def test_in_this_process_the_same_registrations_train(make_config, script_registrations) -> None:
    cfg = make_config(dataset="script_digits", model="script_mlp", epochs=2)
    auroc = Experiment(cfg).run().leaderboard.query("metric == 'auroc'")["mean"]
    assert len(auroc) == 1 and 0.5 < float(auroc.iloc[0]) <= 1.0
