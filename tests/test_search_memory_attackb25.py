"""The near search's refusal after training (`harness.search_memory.SearchOutOfMemory`) carries the
store that keeps the trained runs as `store`: an API caller (`run_experiment`) who catches it can
rerun with that store without parsing the message. Before, only the message named it."""

from __future__ import annotations

import pickle

import pytest

from harness import api
from harness.errors import StorageError
from harness.search_memory import Available, SearchOutOfMemory, refusal
from harness.tasks import suspects


def test_the_refusal_after_training_carries_its_store() -> None:
    error = refusal(20_000, 0, 150_528, 27 * 2**30, Available(16 * 2**30), "/data/store")
    assert isinstance(error, SearchOutOfMemory) and isinstance(error, StorageError)
    assert error.store == "/data/store"
    assert "kept in the store /data/store:" in str(error)
    copied = pickle.loads(pickle.dumps(error))  # as a worker or a notebook's multiprocessing would send it
    assert (type(copied), str(copied), copied.store) == (SearchOutOfMemory, str(error), "/data/store")


def test_through_the_api_the_refusal_after_training_names_keywords(tmp_path, monkeypatch) -> None:
    """A notebook calling `run_experiment` never typed `--task-arg`: the refusal before training was
    reworded to `task_args=[...]`, the one after training (a StorageError) was not."""
    calls: list[int] = []
    monkeypatch.setattr(suspects, "available_bytes", lambda: calls.append(1) or Available(
        64 * 2**30 if len(calls) == 1 else 2**20))
    with pytest.raises(SearchOutOfMemory) as info:
        api.run_experiment(tasks="suspects", proxies="csl", epochs=1, seeds=1, executor="inprocess",
                           store=tmp_path / "store", out=tmp_path / "out")
    message = str(info.value)
    assert "task_args=['suspects.duplicates=exact']" in message and "--task-arg" not in message
    assert info.value.store == str(tmp_path / "store")
