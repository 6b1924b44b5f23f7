"""A researcher's proxy plugin, by the docs (docs/extending.md): an alias entry point beside the one
named like the class draws no warning asking for what is already there, and the table of built-in
recorders that docs/extending.md gives (so a proxy can read `train_margin` without reading memprox's
source) names every registered built-in recorder with the arrays it records."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.recorders import RECORDERS
from harness.recorders.base import RunContext
from proxies import Proxy, registry

ENTRY_GROUP = registry.ENTRY_POINT_GROUP
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _plugin_class() -> type[Proxy]:
    body = {"name": "alias29", "description": "d", "citation": "c", "score": lambda self, ctx: np.zeros(1)}
    return type("Alias29", (Proxy,), body)


def _install(monkeypatch, cls: type[Proxy], *entry_names: str) -> None:
    module = types.ModuleType("plugin29_module")
    module.Plugin = cls
    monkeypatch.setitem(sys.modules, "plugin29_module", module)
    eps = [importlib.metadata.EntryPoint(n, "plugin29_module:Plugin", registry.ENTRY_POINT_GROUP)
           for n in entry_names]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: eps if group == ENTRY_GROUP else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


@pytest.mark.parametrize("alias", ["alias29_old", "a_alias29"])  # loaded after, and before, the class's own name
def test_an_alias_entry_point_beside_one_of_the_class_name_draws_no_warning(monkeypatch, fresh, alias) -> None:
    """Before: `two_alias = pkg:TwoA` beside `two_a = pkg:TwoA` warned on every run "registers proxy
    'two_a': select it by that name, and name the entry point 'two_a' too", which it already was."""
    cls = _plugin_class()
    _install(monkeypatch, cls, "alias29", alias)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_plugins()
    assert [str(w.message) for w in caught] == []
    assert fresh["alias29"] is cls and alias not in fresh


def test_an_alias_alone_still_says_which_name_selects_it(monkeypatch, fresh) -> None:
    _install(monkeypatch, _plugin_class(), "alias29_old")
    with pytest.warns(UserWarning, match="registers proxy 'alias29': select it by that name, and name the entry "
                                         "point 'alias29' too"):
        registry.load_plugins()
    assert "alias29" in fresh and "alias29_old" not in fresh


def _documented_recorders() -> dict[str, set[str]]:
    """docs/extending.md's table of built-in recorders: name -> the arrays it lists."""
    text = (DOCS / "extending.md").read_text()
    table = text.split("<!-- recorders-table -->")[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = set(re.findall(r"`([a-z_][a-z0-9_]*)`", cells[1]))
        elif rows and not line.startswith("|"):
            break
    return rows


def _arrays(name: str) -> set[str]:
    ctx = RunContext(data=None, epochs=3, train_idx=None, batch_size=4, device=torch.device("cpu"), samples=6,
                     classes=4)
    return set(RECORDERS[name](ctx).buffers)


def test_the_recorders_table_lists_every_built_in_recorder_and_its_arrays() -> None:
    rows = _documented_recorders()
    built_in = sorted(n for n, cls in RECORDERS.items() if cls.__module__.startswith("harness."))
    assert sorted(rows) == built_in
    for name in built_in:
        assert rows[name] == _arrays(name), name
    assert rows["train_margin"] == {"margin"} and rows["train_prob"] == {"p_label", "el2n"}


def _typed_class() -> type[Proxy]:
    body = {"name": "typed29", "description": "d", "citation": "c", "score": lambda self, ctx: np.zeros(1),
            "defaults": {"flag": False, "mode": "a", "scale": 1.0, "opt": None}}
    return type("Typed29", (Proxy,), body)


@pytest.mark.parametrize(("arg", "key", "value"), [
    ("typed29.flag=True", "flag", True), ("typed29.mode=b", "mode", "b"), ("typed29.mode='3'", "mode", "3"),
    ("typed29.scale=1e-2", "scale", 0.01), ("typed29.scale=2", "scale", 2.0), ("typed29.opt=None", "opt", None),
    ("typed29.opt=nan", "opt", "nan"),
])
def test_proxy_arg_values_read_as_docs_proxies_says(fresh, arg, key, value) -> None:
    """docs/proxies.md, Variants and parameters: a value is a Python literal, else the text."""
    from harness.values import parse_key_values

    fresh.register("typed29", _typed_class())
    (proxy,) = registry.resolve_proxies("typed29", parse_key_values([arg], "--proxy-arg"))
    got = proxy.params[key]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("arg", "needle"), [
    ("typed29.flag=true", "typed29.flag must be True or False, as its default False is (got str 'true')"),
    ("typed29.flag=1", "typed29.flag must be True or False, as its default False is (got int 1)"),
    ("typed29.mode=3", "typed29.mode must be a string, as its default 'a' is (got int 3)"),
    ("typed29.scale=inf", "typed29.scale must be a number, as its default 1.0 is (got str 'inf')"),
])
def test_proxy_arg_values_the_docs_say_are_refused_are(fresh, arg, needle) -> None:
    from harness.errors import HarnessError
    from harness.values import parse_key_values

    fresh.register("typed29", _typed_class())
    with pytest.raises(HarnessError) as info:
        registry.resolve_proxies("typed29", parse_key_values([arg], "--proxy-arg"))
    assert needle in str(info.value)


PLUGIN_MODULE = '''
from harness.recorders import RecorderRequest
from proxies import Proxy, register_proxy

TL = RecorderRequest.of("train_loss")


@register_proxy
class Var(Proxy):
    name = "lv29"
    description = "d"
    citation = "{package}"
    recorders = (TL,)

    def score(self, ctx):
        return ctx.arrays(TL)["loss"].sum(0)


@register_proxy
class Margin(Proxy):
    name = "lm29"
    description = "d"
    citation = "{package}"
    recorders = (TL,)

    def score(self, ctx):
        return -ctx.arrays(TL)["loss"].sum(0)
'''


def _two_packages(monkeypatch, tmp_path, points: list[tuple[str, str]]) -> None:
    """pkg29a and pkg29b, each a module registering proxies lv29 and lm29, under `points` (name, value)."""
    for package in ("pkg29a", "pkg29b"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "mod.py").write_text(PLUGIN_MODULE.replace("{package}", package))
    monkeypatch.syspath_prepend(str(tmp_path))
    for package in ("pkg29a", "pkg29b"):
        monkeypatch.delitem(sys.modules, package, raising=False)
        monkeypatch.delitem(sys.modules, f"{package}.mod", raising=False)
    eps = [importlib.metadata.EntryPoint(n, v, ENTRY_GROUP) for n, v in points]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: eps if group == ENTRY_GROUP else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


def test_a_name_whose_own_plugin_failed_to_load_is_not_served_by_another_packages_class(monkeypatch, tmp_path,
                                                                                       fresh) -> None:
    """Two packages both define lv29 (withheld) and lm29. pkg29b's module loads first (its entry point
    `a_lm` sorts first) and registers both; pkg29a's module then fails on lv29, so its entry point
    `lm29` fails to load. Before: `--proxies lm29` scored pkg29b's class (its AUROC under the name
    of pkg29a's proxy, 0.003 in the journey), and no warning said that lm29 ran another package's
    class. Now lm29 is claimed by two plugins, and neither is used."""
    from harness.errors import HarnessError

    _two_packages(monkeypatch, tmp_path, [("lv29", "pkg29a.mod:Var"), ("lm29", "pkg29a.mod:Margin"),
                                          ("lv29", "pkg29b.mod:Var"), ("a_lm", "pkg29b.mod:Margin")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_plugins()
    messages = [str(w.message) for w in caught]
    assert "lm29" not in fresh and "lv29" not in fresh
    assert any("proxy 'lm29' is claimed by installed plugin 'lm29' (pkg29a.mod:Margin), which failed to load, "
               "and by pkg29b.mod.Margin" in m for m in messages), messages
    with pytest.raises(HarnessError, match=r"proxy 'lm29' is claimed by 2 installed plugins \(pkg29b\.mod\.Margin, "
                                           r"pkg29a\.mod:Margin, which failed to load\)"):
        registry.resolve_proxies("lm29")


def test_a_plugin_that_loads_keeps_its_name_when_the_others_module_failed(monkeypatch, tmp_path, fresh) -> None:
    """The other order: pkg29a loads first and keeps lm29 under its own entry point; pkg29b's module
    fails (lv29), so its class never claimed lm29: pkg29a's lm29 is used, as before."""
    _two_packages(monkeypatch, tmp_path, [("lv29", "pkg29a.mod:Var"), ("lm29", "pkg29a.mod:Margin"),
                                          ("lv29", "pkg29b.mod:Var"), ("z_lm", "pkg29b.mod:Margin")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry.load_plugins()
    assert fresh["lm29"].citation == "pkg29a" and "lv29" not in fresh
