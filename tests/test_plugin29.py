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
