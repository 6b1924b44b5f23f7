"""`--ray-address` errors name what to fix. `auto` with a malformed RAY_ADDRESS said "Ray address 'foo' is
not HOST:PORT", an address the user never wrote (they passed `auto`); an empty address said "ray address
must be HOST:PORT or 'auto' (got '')", naming neither the option nor a fix. No Ray is started."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from harness.config import ExperimentConfig  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.executors.ray import RayExecutor  # noqa: E402
from harness.executors.ray_cluster import cluster_address  # noqa: E402


@pytest.mark.parametrize("env", ["foo", "10.0.0.5", "10.0.0.5:99999", "http://10.0.0.5:6379"])
def test_auto_names_a_malformed_ray_address_variable(monkeypatch, env) -> None:
    monkeypatch.setenv("RAY_ADDRESS", env)
    with pytest.raises(HarnessError) as caught:
        cluster_address("auto")
    assert str(caught.value).startswith(f"--ray-address auto reads RAY_ADDRESS, which is {env!r}: not HOST:PORT")
    assert "fix or unset RAY_ADDRESS" in str(caught.value)


@pytest.mark.parametrize("env", ["10.0.0.5:6379", "ray://10.0.0.5:10001", "[::1]:6379"])
def test_auto_takes_a_well_formed_ray_address_variable(monkeypatch, env) -> None:
    monkeypatch.setenv("RAY_ADDRESS", env)
    assert cluster_address("auto") == env


def test_an_explicit_address_is_returned_as_given(monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "foo")  # not read: the user named the cluster
    assert cluster_address("10.0.0.5:6379") == "10.0.0.5:6379"


def test_an_empty_address_names_the_option_and_the_fix() -> None:
    cfg = ExperimentConfig(executor="ray", ray_address="")
    with pytest.raises(HarnessError) as caught:
        RayExecutor.validate(cfg)
    assert str(caught.value) == ("--ray-address must be the head's HOST:PORT or auto (got ''); pass e.g. "
                                 "--ray-address 10.0.0.5:6379, or leave it out to start a local Ray")
