"""Two installed packages that claim one plugin name: which one loaded depended on the order
site-packages lists them in, so `--proxies late_margin` ran one implementation or the other by
machine. Now neither is used, a warning names both when plugins load, and selecting the name
is refused with both named. A proxy's infinite scores are described as the metrics rank them."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import numpy as np
import pytest

from harness.errors import HarnessError
from proxies import Proxy, registry


def _claim(monkeypatch, group: str, name: str, modules: dict[str, object]) -> None:
    """Install `modules` (module name -> the object its `Plugin` is) under one entry-point `name`."""
    points = []
    for module_name, obj in modules.items():
        module = types.ModuleType(module_name)
        module.Plugin = obj
        monkeypatch.setitem(sys.modules, module_name, module)
        points.append(importlib.metadata.EntryPoint(name, f"{module_name}:Plugin", group))
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: list(reversed(points)) if group == points[0].group
                        else real(group=group, **kw))


def _proxy(tag: str) -> type[Proxy]:
    return type(f"Claim{tag}", (Proxy,), {"name": "claimed_twice", "description": tag, "citation": "c",
                                          "score": lambda self, ctx: np.zeros(1)})


def test_a_proxy_name_two_plugins_claim_is_withheld_and_refused(monkeypatch, fresh) -> None:
    _claim(monkeypatch, registry.ENTRY_POINT_GROUP, "claimed_twice",
           {"claim_pkg_b": _proxy("B"), "claim_pkg_a": _proxy("A")})
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(UserWarning, match=r"proxy 'claimed_twice' is claimed by 2 installed plugins "
                                         r"\(claim_pkg_a:Plugin, claim_pkg_b:Plugin\): none is used"):
        names = registry.available_proxies()
    assert "claimed_twice" not in names and "csl" in names
    with pytest.raises(HarnessError, match=r"proxy 'claimed_twice' is claimed by 2 installed plugins .*uninstall "
                                           r"all but one"):
        registry.make_proxy("claimed_twice")


def test_one_package_listed_twice_is_one_claim(monkeypatch, fresh) -> None:
    # the same entry point seen twice (an editable install beside a wheel's metadata) is no clash
    cls = _proxy("A")
    points = [importlib.metadata.EntryPoint("claimed_twice", "claim_pkg_one:Plugin", registry.ENTRY_POINT_GROUP)] * 2
    module = types.ModuleType("claim_pkg_one")
    module.Plugin = cls
    monkeypatch.setitem(sys.modules, "claim_pkg_one", module)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: points if group == registry.ENTRY_POINT_GROUP
                        else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert registry.available_proxies()["claimed_twice"] is cls


def test_a_dataset_name_two_plugins_claim_is_refused(monkeypatch) -> None:
    from harness.datasets import base

    _claim(monkeypatch, base.ENTRY_POINT_GROUP, "claimeddata", {"claim_data_a": object(), "claim_data_b": object()})
    monkeypatch.setattr(base.DATASETS, "withheld", {})
    with pytest.warns(UserWarning, match="dataset 'claimeddata' is claimed by 2 installed plugins"):
        with pytest.raises(HarnessError, match=r"dataset 'claimeddata' is claimed by 2 installed plugins "
                                               r"\(claim_data_a:Plugin, claim_data_b:Plugin\), so none is used"):
            base.load_dataset("claimeddata")


def test_an_executor_name_two_plugins_claim_is_refused(monkeypatch) -> None:
    import harness.executors as executors

    _claim(monkeypatch, executors.ENTRY_POINT_GROUP, "claimedexec",
           {"claim_exec_a": object(), "claim_exec_b": object()})
    monkeypatch.setattr(executors.EXECUTORS, "withheld", {})
    with pytest.warns(UserWarning, match="executor 'claimedexec' is claimed by 2 installed plugins"):
        with pytest.raises(HarnessError, match="executor 'claimedexec' is claimed by 2 installed plugins"):
            executors.executor_class("claimedexec")


def test_infinite_scores_are_described_as_ranked() -> None:
    from harness.evaluation import score

    class Scores(Proxy):
        name, description, citation = "inf_scores_probe", "d", "c"

        def score(self, ctx):
            return np.array([np.inf, -np.inf, np.nan, 1.0, 2.0])

    class Base:
        def label(self) -> str:
            return "base"

    base = Base()
    data = types.SimpleNamespace(labels=np.zeros(5, dtype=np.int64), num_classes=2, n=5)
    with pytest.warns(UserWarning, match=r"rank them as its value says \(NaN below every score, -inf below every "
                                         r"finite score, \+inf above every finite score\)"):
        scores, problems = score([Scores()], base, data, {base: object()})
    assert problems == [] and np.isposinf(scores["inf_scores_probe"][0])
