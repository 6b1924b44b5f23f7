"""Which code produced a leaderboard: memprox's version and, per proxy, its parameters, its class and,
for a proxy from outside memprox (a plugin package, a user's module), the package's version and a
digest of the class's code. Two leaderboards of one experiment before and after a plugin changed are
then told apart in summary.json, where the experiment's identity (its options) is the same."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from typing import Any

from harness.code_digest import code_digest
from harness.code_digest_user import OWN
from proxies import Proxy


def memprox_version() -> str:
    try:
        return importlib.metadata.version("memprox")
    except importlib.metadata.PackageNotFoundError:  # a source checkout run without installing it
        return "unknown (not installed)"


def proxy_provenance(proxies: list[Proxy]) -> list[dict[str, Any]]:
    """One record per proxy: label, name, params, class; outside memprox also package and code."""
    packages: Mapping[str, list[str]] = {}
    if any(type(p).__module__.partition(".")[0] not in OWN for p in proxies):  # scans every installed package
        packages = importlib.metadata.packages_distributions()
    return [_one(proxy, packages) for proxy in proxies]


def _one(proxy: Proxy, packages: Mapping[str, list[str]]) -> dict[str, Any]:
    cls = type(proxy)
    record: dict[str, Any] = {"label": proxy.label, "name": proxy.name, "params": dict(proxy.params),
                              "class": f"{cls.__module__}.{cls.__qualname__}"}
    top = cls.__module__.partition(".")[0]
    if top not in OWN:
        record["package"] = ", ".join(f"{p} {_version(p)}" for p in packages.get(top, [])) or None  # None: a script's
        record["code"] = code_digest(cls, 12)
    return record


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"
