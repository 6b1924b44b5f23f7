"""Memorization proxies: one module per proxy, registered on import.

Add a proxy by dropping a module with a `Proxy` subclass decorated with `@register_proxy` into this
package (every module here is imported), or ship it in your own package under the
`memprox.proxies` entry-point group.
"""

import importlib
import pkgutil

from proxies.base import Need, Proxy, ScoreContext
from proxies.registry import PROXIES, available_proxies, make_proxy, register_proxy, resolve_proxies

#: The proxy modules memprox ships, imported before any other module here: a module of a user's
#: that takes one of their names is then the one told to rename. Imported in name order, a
#: `clipped.py` claiming "csl" came first, and the error told proxies.csl.CSL to take another name.
BUILT_IN = ("aum", "confident_learning", "csg", "csl", "csl_eval", "curvature", "el2n", "final_loss", "forgetting",
            "in_confidence", "learning_time", "loss_sensitivity", "ssft", "threshold_lt", "variability")

for _name in (*BUILT_IN, *(m.name for m in pkgutil.iter_modules(__path__))):
    if _name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_name}")

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
