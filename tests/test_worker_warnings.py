"""A dataset's loading warnings are the driver's to show, once: every worker process loaded the
dataset again on its first job and printed them again, raw (`file:line: UserWarning: ...`)."""

from __future__ import annotations

import warnings

import pytest
import torch

import harness.jobs as jobs
from harness.datasets import DATASETS, load_dataset, register_dataset
from harness.jobs import DataSource, load_source, prepared_data
from harness.runspec import DataSpec

NAME = "test_worker_warnings_digits"


@pytest.fixture
def warning_dataset(monkeypatch: pytest.MonkeyPatch):
    @register_dataset(NAME, "digits, with a loading warning")
    def _load(request):
        warnings.warn("stems are not integers: canonical order by name", UserWarning, stacklevel=2)
        return load_dataset("digits")

    monkeypatch.setattr(jobs, "_DATASETS", type(jobs._DATASETS)())
    monkeypatch.setattr(jobs, "_PREPARED", type(jobs._PREPARED)())
    yield DataSource(NAME)
    DATASETS._items.pop(NAME, None)


def test_the_driver_sees_a_loading_warning_and_a_job_loading_the_same_data_does_not(warning_dataset) -> None:
    with pytest.warns(UserWarning, match="stems are not integers"):
        planned = load_source(warning_dataset)  # the driver, before planning
    jobs._DATASETS.clear()  # a fresh worker process: nothing cached
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = prepared_data(warning_dataset, DataSpec(dataset=NAME, dataset_sha=planned.fingerprint),
                             torch.device("cpu"))
    assert [str(w.message) for w in caught] == []
    assert data.n == 1437  # the data itself is loaded as before


def test_gpus_per_run_on_a_cpu_says_it_has_no_effect(make_config) -> None:
    """It was accepted silently: a user packing runs with --gpus-per-run 0.25 on a machine without a
    GPU (--device auto) should hear that nothing is packed."""
    from harness.experiment import Experiment

    with pytest.warns(UserWarning, match=r"--gpus-per-run 0.25 has no effect: this experiment runs on cpu"):
        Experiment(make_config(gpus_per_run=0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Experiment(make_config())  # the default says nothing
