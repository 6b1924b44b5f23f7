"""Each corruption is prepared once per experiment in a process (jobsattack28).

`harness.jobs._PREPARED` kept 4 entries whatever they held, so an experiment of more corruptions prepared each
3 or 4 times: 3 noise rates x 2 seeds (6 noisy DataSpecs) made 24 prepares (f410fdc too, and ccc8f32), each
reading every image for its channel statistics. A CPU entry of a noise or label-file corruption is a view of
the cached dataset's images with labels of its own: only entries that hold memory of their own (a device copy,
duplicated images, a dataset no longer cached) count against the 4 now."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import harness.jobs as jobs
from harness.experiment import Experiment
from harness.jobs import DataSource, load_source, prepared_data
from harness.runspec import Corruption, DataSpec


@pytest.fixture
def prepares(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[DataSpec]]:
    """The DataSpecs `harness.jobs` prepares, in a process whose caches start empty."""
    monkeypatch.setattr(jobs, "_DATASETS", type(jobs._DATASETS)())
    monkeypatch.setattr(jobs, "_PREPARED", type(jobs._PREPARED)())
    made: list[DataSpec] = []
    real = jobs.prepare

    def counted(spec, dataset, device):
        made.append(spec)
        return real(spec, dataset, device)

    monkeypatch.setattr(jobs, "prepare", counted)
    yield made


def test_an_experiment_of_six_corruptions_prepares_each_once_and_again_once_on_its_next_call(
        make_config, prepares: list[DataSpec]) -> None:
    cfg = make_config(noise_rates=(0.1, 0.2, 0.3), seeds=(0, 1), epochs=1, out=None)
    first = Experiment(cfg)
    specs = {spec.data for spec in first.plan.runs}
    assert len(specs) == 6
    board = first.run().leaderboard
    assert sorted(map(str, prepares)) == sorted(map(str, specs))  # was 24: each 4 times
    prepares.clear()
    again = Experiment(cfg).run()  # a notebook's next call: its planning reloads the data, so once more each
    assert sorted(map(str, prepares)) == sorted(map(str, specs))  # was 18
    assert again.reused and not again.trained
    assert again.leaderboard.equals(board)


def test_entries_of_a_dataset_no_longer_cached_count_against_the_four(prepares: list[DataSpec]) -> None:
    source, cpu = DataSource("digits"), torch.device("cpu")
    load_source(source)
    old = [DataSpec(corruption=Corruption(kind="noise", rate=0.1, seed=s)) for s in range(6)]
    for spec in old:
        prepared_data(source, spec, cpu)
    assert len(jobs._PREPARED) == 6  # views of the cached digits: all kept
    load_source(source)  # reloaded (a next experiment's planning): the six now hold the old dataset alive
    new = DataSpec(corruption=Corruption(kind="noise", rate=0.2, seed=0))
    prepared_data(source, new, cpu)
    assert [spec for spec, _ in jobs._PREPARED] == [*old[2:], new]  # the oldest two dropped
    dup = DataSpec(corruption=Corruption(kind="duplicates", pairs=5, seed=0))
    prepared_data(source, dup, cpu)  # its own images: it counts too
    assert [spec for spec, _ in jobs._PREPARED] == [*old[3:], new, dup]
