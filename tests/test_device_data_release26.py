"""A notebook's `run_experiment` on a GPU left its prepared datasets in GPU memory after it returned
(the per-process cache in `harness.jobs`); the host copies stay cached for the next call."""

from __future__ import annotations

from harness import jobs
from harness.api import host_state_kept


def test_data_prepared_on_an_accelerator_is_let_go_when_the_call_returns(monkeypatch) -> None:
    cache = type(jobs._PREPARED)()
    monkeypatch.setattr(jobs, "_PREPARED", cache)
    with host_state_kept():
        cache[("a", "cpu")] = "host"
        cache[("b", "cuda:0")] = "gpu"
        cache[("c", "mps")] = "mps"
    assert dict(cache) == {("a", "cpu"): "host"}


def test_it_is_let_go_when_the_call_fails_too(monkeypatch) -> None:
    cache = type(jobs._PREPARED)()
    monkeypatch.setattr(jobs, "_PREPARED", cache)
    try:
        with host_state_kept():
            cache[("b", "cuda")] = "gpu"
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not cache
