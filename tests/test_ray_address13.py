"""`--ray-address auto` reads RAY_ADDRESS, then the cluster `ray start` recorded; RAY_ADDRESS=auto
(or local) names no cluster and falls through to the record, and the refusal says what it saw."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.executors import ray_cluster


@pytest.mark.parametrize("env, recorded, expected", [
    ("10.0.0.5:6379", "10.0.0.9:6379", "10.0.0.5:6379"),  # RAY_ADDRESS wins over the record
    ("", "10.0.0.9:6379", "10.0.0.9:6379"),
    ("auto", "10.0.0.9:6379", "10.0.0.9:6379"),  # auto in the environment: the record, as Ray reads it
    ("local", "10.0.0.9:6379", "10.0.0.9:6379"),
])
def test_auto_finds_the_cluster(monkeypatch, env: str, recorded: str, expected: str) -> None:
    monkeypatch.setenv("RAY_ADDRESS", env)
    monkeypatch.setattr(ray_cluster, "_recorded_cluster", lambda: recorded)
    assert ray_cluster.cluster_address("auto") == expected
    assert ray_cluster.cluster_address("10.1.1.1:1") == "10.1.1.1:1"  # an address is taken as given


@pytest.mark.parametrize("env, said", [
    (None, "RAY_ADDRESS is not set and"),
    ("", "RAY_ADDRESS is not set and"),
    ("auto", "RAY_ADDRESS is 'auto', which names no cluster, and"),
])
def test_auto_without_a_cluster_says_what_it_saw(monkeypatch, env: str | None, said: str) -> None:
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    monkeypatch.setattr(ray_cluster, "_recorded_cluster", lambda: None)
    with pytest.raises(HarnessError) as raised:
        ray_cluster.cluster_address("auto")
    assert f"found no Ray cluster: {said} no cluster started with `ray start`" in str(raised.value)
