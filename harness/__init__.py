"""memprox engine: data, training with recorders, run store, planning, tasks, leaderboard, CLI.

Public objects are imported on first use, so `import harness` stays light (no torch, no proxies).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_LAZY = {
    "SampleTracker": "harness.tracker",
    "run_experiment": "harness.api",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
