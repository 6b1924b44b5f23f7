"""A proxy plugin installed as an entry point for one test: its module is written to `tmp_path`, and
`importlib.metadata.entry_points` answers memprox's group with it alone, so the registry loads it on
its next `load_plugins()` as it would an installed package's."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from proxies import registry


def install_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str, source: str, name: str,
                   attr: str) -> None:
    (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    ep = importlib.metadata.EntryPoint(name, f"{module}:{attr}", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
