"""Whether a stored entry is still reachable: its manifest's spec re-derived into today's address.

"Unreachable" is exact: an entry is unreachable only when its manifest's spec rebuilds into
today's `RunSpec` with every stored field as stored (`rebuild_spec`) and that spec's digest is not
the entry's name. A spec today's classes cannot hold as stored (a field since removed, a value
normalised differently) is "unknown" and never offered for removal as unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from harness.recipe import Recipe
from harness.runspec import Corruption, DataSpec, RunSpec, TrainSubset


def _build(cls: type, raw: Any, nested: dict[str, Callable[[Any], Any]]) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{cls.__name__} is not a JSON object")
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has fields today's memprox lacks: {', '.join(sorted(unknown))}")
    return cls(**{k: nested[k](v) if k in nested else v for k, v in raw.items()})


def rebuild_spec(raw: Any) -> RunSpec:
    """Today's RunSpec of a manifest's `spec`; ValueError (or TypeError) when its fields do not fit."""
    def subset(v: Any) -> TrainSubset | None:
        return None if v is None else _build(TrainSubset, v, {})

    def recipe(v: Any) -> Recipe:
        return _build(Recipe, v, {"milestones": lambda m: tuple(m) if isinstance(m, list) else m})

    def data(v: Any) -> DataSpec:
        return _build(DataSpec, v, {"corruption": lambda c: _build(Corruption, c, {})})

    return _build(RunSpec, raw, {"data": data, "recipe": recipe, "train_on": subset, "then_on": subset})


def _covers(built: Any, raw: Any) -> bool:
    """Every value of `raw` is in `built` as it is (fields `raw` lacks took today's defaults)."""
    if isinstance(raw, dict):
        return isinstance(built, dict) and all(k in built and _covers(built[k], v) for k, v in raw.items())
    return json.dumps(built, sort_keys=True) == json.dumps(raw, sort_keys=True)


def reachability(raw: Any, digest: str) -> str:
    """current: today's memprox reads this entry for its spec; unreachable: it never will (the spec
    rebuilds exactly and hashes elsewhere, e.g. after AUGMENT_VERSION or TIE_RULE_VERSION changed);
    unknown: the spec does not rebuild exactly, so nothing is claimed."""
    try:
        spec = rebuild_spec(raw)
        built = json.loads(json.dumps(spec.to_dict(), default=str))
        if not _covers(built, raw):
            return "unknown"
        today = spec.digest()
    except (ValueError, TypeError, AttributeError, KeyError):
        return "unknown"
    return "current" if today == digest else "unreachable"
