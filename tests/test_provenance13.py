"""summary.json says which code produced the leaderboard: memprox's version, each proxy's params and
class, and for a proxy from outside memprox a digest of its code, so two leaderboards of one
experiment identity before and after a plugin changed can be told apart."""

from __future__ import annotations

import importlib.metadata

import numpy as np

from harness.provenance import memprox_version, proxy_provenance
from proxies import Proxy, make_proxy


def _outside(scale: float) -> Proxy:
    cls = type("LateProbe", (Proxy,), {"name": "late_probe", "description": "d", "citation": "c",
                                       "defaults": {"window": 3}, "__module__": "walk_plugin.late",
                                       "score": lambda self, ctx, s=scale: np.zeros(1) + s})
    return cls(window=5)


def test_memprox_and_built_in_proxies_are_named() -> None:
    assert memprox_version() == importlib.metadata.version("memprox")
    csl, conf = proxy_provenance([make_proxy("csl"), make_proxy("in_confidence", variant="max")])
    assert csl == {"label": "csl", "name": "csl", "params": {}, "class": "proxies.csl.CSL"}
    assert conf["label"] == "in_confidence(variant=max)" and conf["params"] == {"variant": "max"}
    assert "code" not in conf and "package" not in conf


def test_a_proxy_from_outside_memprox_carries_its_code_digest() -> None:
    (record,) = proxy_provenance([_outside(1.0)])
    assert record["class"] == "walk_plugin.late.LateProbe" and record["params"] == {"window": 5}
    assert record["package"] is None and len(record["code"]) == 12  # no installed package provides walk_plugin
