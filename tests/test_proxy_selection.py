"""Proxy selection syntax: variants of one proxy side by side, and clear errors."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.registry import Registry
from proxies import available_proxies, resolve_proxies
from proxies.registry import parse_selection


def test_parse_selection_with_parameters() -> None:
    assert parse_selection("csl, curvature(n=2),curvature(n=10, h=0.01), in_confidence(variant=max)") == [
        ("csl", {}),
        ("curvature", {"n": 2}),
        ("curvature", {"n": 10, "h": 0.01}),
        ("in_confidence", {"variant": "max"}),
    ]


def test_variants_get_distinct_labels() -> None:
    labels = [p.label for p in resolve_proxies("curvature(n=2),curvature")]
    assert labels == ["curvature(n=2)", "curvature"]


def test_all_selects_every_registered_proxy() -> None:
    assert list(dict.fromkeys(p.name for p in resolve_proxies("all"))) == list(available_proxies())
    assert len(available_proxies()) >= 15


def test_proxy_arg_applies_to_every_instance_and_may_not_repeat_an_inline_value() -> None:
    ps = resolve_proxies("curvature(n=5),curvature(n=3)", {"curvature": {"h": 0.01}})
    assert [p.params["n"] for p in ps] == [5, 3]
    assert all(p.params["h"] == 0.01 for p in ps)
    with pytest.raises(HarnessError, match=r"curvature.n is given both by --proxy-arg and in --proxies"):
        resolve_proxies("curvature,curvature(n=3)", {"curvature": {"h": 0.01, "n": 5}})  # once the inline won


@pytest.mark.parametrize(
    "selection, message",
    [
        ("csl,,aum", "cannot parse"),
        ("curvature(n)", "KEY=VALUE"),
        ("csl,csl", "selected twice"),
        ("nope", "valid proxies"),
        ("curvature(z=1)", "no parameter"),
    ],
)
def test_bad_selections(selection: str, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        resolve_proxies(selection)


def test_installed_plugin_proxies_register_through_the_entry_point_group(monkeypatch) -> None:
    """A third-party package's entry point makes its proxy selectable; a broken one only warns."""
    import importlib.metadata
    import types

    import numpy as np

    from harness.recorders import RecorderRequest
    from proxies import Proxy, ScoreContext, registry

    class PluginProxy(Proxy):
        name = "plugin_proxy"
        description = "test plugin"
        citation = "nobody"
        recorders = (RecorderRequest.of("train_loss"),)

        def score(self, ctx: ScoreContext) -> np.ndarray:
            return np.zeros(len(ctx.labels))

    module = types.ModuleType("fake_plugin_module")
    module.PluginProxy = PluginProxy
    monkeypatch.setitem(__import__("sys").modules, "fake_plugin_module", module)
    good = importlib.metadata.EntryPoint("plugin_proxy", "fake_plugin_module:PluginProxy", registry.ENTRY_POINT_GROUP)
    broken = importlib.metadata.EntryPoint("broken", "no_such_module_xyz:Nope", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points  # other libraries look up their own groups
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [good, broken] if group == good.group else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    fresh = Registry("proxy")
    for name, cls in registry.PROXIES.items():
        fresh.register(name, cls)
    monkeypatch.setattr(registry, "PROXIES", fresh)
    with pytest.warns(UserWarning, match="broken"):
        proxies = available_proxies()
    assert "plugin_proxy" in proxies
    assert [p.name for p in resolve_proxies("csl,plugin_proxy")] == ["csl", "plugin_proxy"]


def test_all_runs_listed_variants_beside_the_defaults_once() -> None:
    labels = [p.label for p in resolve_proxies("all")]
    assert "learning_time" in labels and "learning_time(rule=count)" in labels
    assert len(labels) == len(set(labels))
    # --proxy-arg turning the default into the variant leaves one instance, not a clash
    labels = [p.label for p in resolve_proxies("all", {"learning_time": {"rule": "count"}})]
    assert labels.count("learning_time(rule=count)") == 1 and "learning_time" not in labels
