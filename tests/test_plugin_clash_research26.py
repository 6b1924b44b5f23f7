"""An installed proxy plugin named like a built-in ("csl") is left out, and `--proxies csl` then
scores the built-in: the warning now says so, naming the class that runs, so the author does not
read the built-in's numbers as the plugin's. Before, it said only that the plugin failed to load
(or was ignored), not what selecting its name runs."""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings

import numpy as np
import pytest

from harness.errors import HarnessError
from proxies import Proxy, registry, resolve_proxies

CLASHING = '''
import numpy as np
from proxies import Proxy, register_proxy


@register_proxy
class MyCSL(Proxy):
    name, description, citation = "csl", "my csl", "me"

    def score(self, ctx):
        return np.zeros(len(ctx.labels))
'''


def _entry_point(monkeypatch, name: str, value: str) -> None:
    ep = importlib.metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


def _loaded() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_plugins()
    return [str(w.message) for w in caught]


def test_a_plugin_module_registering_a_built_in_name_says_the_built_in_runs(monkeypatch, tmp_path, fresh) -> None:
    (tmp_path / "clash_research26.py").write_text(CLASHING, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "clash_research26", raising=False)
    _entry_point(monkeypatch, "csl", "clash_research26:MyCSL")
    said = _loaded()
    assert said == ["proxy plugin 'csl' (clash_research26:MyCSL) failed to load: ValueError: proxy 'csl' is already "
                    "registered by proxies.csl.CSL; give clash_research26.MyCSL another name; selecting proxy 'csl' "
                    "runs proxies.csl.CSL, not this plugin"]
    assert [type(p).__module__ for p in resolve_proxies("csl")] == ["proxies.csl"]


def test_a_plugin_class_under_a_built_in_name_says_the_built_in_runs(monkeypatch, fresh) -> None:
    cls = type("Mine", (Proxy,), {"name": "csl", "description": "d", "citation": "c",
                                  "score": lambda self, ctx: np.zeros(1)})
    module = types.ModuleType("clash_class_research26")
    module.Mine = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "clash_class_research26", module)
    _entry_point(monkeypatch, "csl", "clash_class_research26:Mine")
    said = _loaded()
    assert len(said) == 1
    assert said[0].endswith("which keeps the name; the plugin is ignored (give it another `name`); selecting proxy "
                            "'csl' runs proxies.csl.CSL, not this plugin")


def test_a_plugin_that_fails_under_a_free_name_says_nothing_of_another(monkeypatch, fresh) -> None:
    module = types.ModuleType("boom_research26")
    monkeypatch.setitem(sys.modules, "boom_research26", module)  # holds no `Boom`: the load fails
    _entry_point(monkeypatch, "boom_research26", "boom_research26:Boom")
    said = _loaded()
    assert len(said) == 1 and said[0].startswith("proxy plugin 'boom_research26' (boom_research26:Boom) failed "
                                                 "to load: AttributeError")
    assert "selecting" not in said[0]
    with pytest.raises(HarnessError, match="failed to load: AttributeError.*so proxy 'boom_research26' is not "
                                        "available"):
        resolve_proxies("boom_research26")


def test_an_entry_point_named_apart_whose_class_takes_a_built_in_name_says_the_built_in_runs(
        monkeypatch, tmp_path, fresh) -> None:
    """Before: `--proxies csl` scored the built-in with no word of it; the plugin's own entry-point
    name was refused as failed to load (that part unchanged)."""
    (tmp_path / "apart_research26.py").write_text(CLASHING, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "apart_research26", raising=False)
    _entry_point(monkeypatch, "my_csl_research26", "apart_research26:MyCSL")
    said = _loaded()
    assert len(said) == 1
    assert said[0].endswith("give apart_research26.MyCSL another name; selecting proxy 'csl' runs proxies.csl.CSL, "
                            "not this plugin")
    with pytest.raises(HarnessError, match="so proxy 'my_csl_research26' is not available"):
        resolve_proxies("my_csl_research26")
