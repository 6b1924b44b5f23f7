"""Memorization proxies: one module per proxy, registered on import.

Add a proxy by dropping a module with a `Proxy` subclass decorated with `@register_proxy` into this
package (every module here is imported), or ship it in your own package under the
`memprox.proxies` entry-point group.
"""

import importlib
import pkgutil

from proxies.base import Need, Proxy, ScoreContext
from proxies.registry import PROXIES, available_proxies, make_proxy, register_proxy, resolve_proxies

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "PROXIES",
    "Need",
    "Proxy",
    "ScoreContext",
    "available_proxies",
    "make_proxy",
    "register_proxy",
    "resolve_proxies",
]
