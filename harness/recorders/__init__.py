"""Recorder registry; every module in this package is imported so its recorders register."""

import importlib
import pkgutil

from harness.recorders.bank import RecorderBank, Records
from harness.recorders.base import (
    EVAL_LAST,
    RECORDERS,
    Recorder,
    RecorderRequest,
    RunArrays,
    RunContext,
    build_recorder,
    eval_batches,
    register_recorder,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "bank"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "EVAL_LAST",
    "RECORDERS",
    "Recorder",
    "RecorderBank",
    "RecorderRequest",
    "Records",
    "RunArrays",
    "RunContext",
    "build_recorder",
    "eval_batches",
    "register_recorder",
]
