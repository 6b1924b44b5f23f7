"""Proxy registry: built-ins register with a decorator, third-party packages through the
`memprox.proxies` entry-point group (the entry point names a Proxy subclass, e.g.
`[project.entry-points."memprox.proxies"] my_proxy = "my_pkg.module:MyProxy"`)."""

from __future__ import annotations

import importlib.metadata
import warnings
from typing import Any

from harness.errors import HarnessError
from proxies.base import Proxy

ENTRY_POINT_GROUP = "memprox.proxies"
PROXIES: dict[str, type[Proxy]] = {}
_plugins_loaded = False


def register_proxy(cls: type[Proxy]) -> type[Proxy]:
    for attr in ("name", "description", "citation"):
        if not getattr(cls, attr, None):
            raise TypeError(f"proxy {cls.__name__} must declare a non-empty `{attr}`")
    PROXIES[cls.name] = cls
    return cls


def load_plugins() -> None:
    """Import proxies installed by other packages; a broken plugin warns instead of failing."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as e:  # a third-party import error must not take the harness down
            warnings.warn(f"proxy plugin {ep.name!r} ({ep.value}) failed to load: {e}")
            continue
        if isinstance(cls, type) and issubclass(cls, Proxy):
            if cls.name not in PROXIES:
                register_proxy(cls)
        else:
            warnings.warn(f"proxy plugin {ep.name!r} ({ep.value}) is not a Proxy subclass; ignored")


def available_proxies() -> dict[str, type[Proxy]]:
    load_plugins()
    return dict(sorted(PROXIES.items()))


def make_proxy(name: str, **params: Any) -> Proxy:
    proxies = available_proxies()
    if name not in proxies:
        raise HarnessError(f"unknown proxy {name!r}; valid proxies: {', '.join(proxies)} (or 'all')")
    return proxies[name](**params)


def resolve_proxies(selection: str, params: dict[str, dict[str, Any]] | None = None) -> list[Proxy]:
    """'all' or a comma list; `params` maps proxy name -> overrides (from --proxy-arg)."""
    params = params or {}
    names = list(available_proxies()) if selection.strip() == "all" else [
        s.strip() for s in selection.split(",") if s.strip()
    ]
    if not names:
        raise HarnessError("no proxies selected; pass --proxies all or a comma-separated list")
    for name in params:
        if name not in names:
            raise HarnessError(f"--proxy-arg names proxy {name!r}, which is not among the selected proxies")
    return [make_proxy(n, **params.get(n, {})) for n in names]
