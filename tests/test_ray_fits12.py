"""A job no live node of the Ray cluster can hold waited in Ray's queue forever, with no line from
memprox (found by a cluster walkthrough: `--threads 2` on nodes of 1 CPU each hung until Ctrl-C)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from harness.errors import HarnessError  # noqa: E402
from harness.executors import ray as ray_executor  # noqa: E402

NODES = [{"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 0.0}},
         {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]  # a dead node holds nothing


def _jobs(cpus: float, gpus: float = 0.0) -> list:
    return [SimpleNamespace(num_cpus=1.0, num_gpus=0.0), SimpleNamespace(num_cpus=cpus, num_gpus=gpus)]


def test_a_run_larger_than_every_live_node_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    ray_executor.check_fits(_jobs(1.0))  # fits the 1-CPU node
    with pytest.raises(HarnessError, match=r"each run asks for 2 CPU\(s\) \(--threads\), but the largest live node "
                                           r"of the Ray cluster has 1: .* lower --threads"):
        ray_executor.check_fits(_jobs(2.0))
    with pytest.raises(HarnessError, match=r"asks for 0.5 GPU\(s\) \(--gpus-per-run\), but the largest live node .* "
                                           r"has 0"):
        ray_executor.check_fits(_jobs(1.0, 0.5))
