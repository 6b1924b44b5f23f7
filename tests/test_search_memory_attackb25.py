"""The near search's refusal after training (`harness.search_memory.SearchOutOfMemory`) carries the
store that keeps the trained runs as `store`: an API caller (`run_experiment`) who catches it can
rerun with that store without parsing the message. Before, only the message named it."""

from __future__ import annotations

import pickle

from harness.errors import StorageError
from harness.search_memory import Available, SearchOutOfMemory, refusal


def test_the_refusal_after_training_carries_its_store() -> None:
    error = refusal(20_000, 0, 150_528, 27 * 2**30, Available(16 * 2**30), "/data/store")
    assert isinstance(error, SearchOutOfMemory) and isinstance(error, StorageError)
    assert error.store == "/data/store"
    assert "kept in the store /data/store:" in str(error)
    copied = pickle.loads(pickle.dumps(error))  # as a worker or a notebook's multiprocessing would send it
    assert (type(copied), str(copied), copied.store) == (SearchOutOfMemory, str(error), "/data/store")
