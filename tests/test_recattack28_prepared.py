"""Prepared views of a cached dataset (CPU noise or label-file corruptions) were kept without bound after 2baa5e1
(only entries holding images of their own count against 4): each holds labels of its own, 17 bytes a sample,
so a notebook's or a long-lived worker's sweep kept every setting it ever prepared (recattack28; fails at
9c7e8d3). At most `jobs.MAX_PREPARED` entries are kept now, the oldest dropped first."""

from __future__ import annotations

import pytest
import torch

import harness.jobs as jobs
from harness.jobs import DataSource, load_source, prepared_data
from harness.runspec import Corruption, DataSpec


def _held(data) -> int:
    """Bytes an entry holds of its own (its images are the cached dataset's)."""
    return int(data.y.nbytes + data.y_clean.nbytes + data.positives.nbytes)


def test_views_of_a_cached_dataset_are_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "_DATASETS", type(jobs._DATASETS)())
    monkeypatch.setattr(jobs, "_PREPARED", type(jobs._PREPARED)())
    source, cpu = DataSource("digits"), torch.device("cpu")
    dataset = load_source(source)
    specs = [DataSpec(corruption=Corruption(kind="noise", rate=0.1, seed=s)) for s in range(70)]
    for spec in specs:
        prepared_data(source, spec, cpu)
    assert len(jobs._PREPARED) == 64  # was all 70 (1,000 settings of 50,000 images: 850 MB)
    assert [spec for spec, _ in jobs._PREPARED] == specs[6:]  # the oldest 6 dropped
    n = len(dataset.y_train)
    assert sum(_held(data) for data in jobs._PREPARED.values()) == 64 * 17 * n
    assert all(data.x.data_ptr() == dataset.x_train.data_ptr() for data in jobs._PREPARED.values())
