"""Shared fixtures: a small experiment config, digits on the CPU, and a fake ScoreContext.

Torch is pinned to one intra-op thread: the suite's models are tiny, and on a small shared CI box
(2 cores) torch's default thread pool spends more time spinning than computing (a digits MLP step
goes from ~5 ms to >100 ms under load). One thread also makes CPU runs bitwise reproducible,
which the determinism and resume tests rely on. Override with MEMPROX_TEST_THREADS.
"""

# ruff: noqa: E402  (the offline switches below must precede every import)
from __future__ import annotations

import os

# never the network, whatever a test asks for: set before anything imports huggingface_hub, which
# reads them once (set later, a test of a missing Hub tokenizer waited ~45 s on Hub retries)
for _offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_offline, "1")

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.config import ExperimentConfig
from harness.datasets import Dataset, load_dataset
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe
from harness.registry import Registry
from harness.runspec import Corruption, DataSpec, RunSpec
from proxies import ScoreContext, registry

torch.set_num_threads(int(os.environ.get("MEMPROX_TEST_THREADS", "1")))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Python's full (generation 2) collection walks every object the process holds: in a worker that has imported
    torch, pandas, transformers, lightning and Ray to collect the suite, and grown with each test, 17 of them took 8
    of the 68 s of three test files. What collection imported lives until the end: `gc.freeze()` takes it out of
    every later collection, and a full collection every 100 (not 10) younger ones keeps the rest rare; young cycles
    are collected as often as before. Three files measured again: 2.6 s of collections instead of 9.6 s."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc.get_threshold()[:2], 100)


#: A recipe that trains a digits MLP in about a second: enough to exercise every code path.
TINY_RECIPE = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=3,
                     schedule="cosine", milestones=(), augment=False)


@pytest.fixture
def tiny_recipe() -> Recipe:
    return TINY_RECIPE


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., ExperimentConfig]:
    """ExperimentConfig factory: digits, MLP, 3 epochs, one seed, one noise rate, csl only, on the
    CPU, trained in this process (`--executor inprocess`: spawning workers costs seconds), store and
    outputs under tmp_path; keyword arguments override any field (`epochs=` and `lr=` override the
    recipe's)."""

    def make(**overrides: Any) -> ExperimentConfig:
        recipe = overrides.pop("recipe", TINY_RECIPE)
        recipe_fields = {k: overrides.pop(k) for k in ("epochs", "lr", "batch_size") if k in overrides}
        fields: dict[str, Any] = {
            "dataset": "digits",
            "model": "mlp",
            "recipe": replace(recipe, **recipe_fields),
            "seeds": (0,),
            "tasks": ("mislabeled",),
            "proxies": "csl",
            "noise_rates": (0.1,),
            "device": "cpu",
            "out": tmp_path / "out",
            "store": tmp_path / "store",
            "progress": False,
            "executor": "inprocess",  # no worker processes to spawn; the pool has tests of its own
        }
        fields.update(overrides)
        return ExperimentConfig(**fields)

    return make


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_noisy(digits: Dataset) -> PreparedData:
    """Digits with 10% symmetric label noise (seed 0), on the CPU."""
    spec = DataSpec(dataset="digits", corruption=Corruption(kind="noise", rate=0.1, seed=0))
    return prepare(spec, digits, torch.device("cpu"))


@pytest.fixture
def base_spec(digits_noisy: PreparedData) -> RunSpec:
    return RunSpec(data=digits_noisy.spec, model="mlp", recipe=TINY_RECIPE, seed=0)


class FakeRun:
    """Stands in for a StoredRun: `.arrays(key)` returns hand-made arrays."""

    def __init__(self, arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        self._arrays = {k: dict(v) for k, v in arrays.items()}

    @property
    def recorders(self) -> set[str]:
        return set(self._arrays)

    def arrays(self, recorder_key: str) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._arrays[recorder_key].items()}


@pytest.fixture
def score_ctx() -> Callable[..., ScoreContext]:
    """`score_ctx({recorder_key: {array_name: array}}, n=..., num_classes=...)` -> a ScoreContext
    whose base run is a FakeRun holding those arrays."""

    def make(arrays: Mapping[str, Mapping[str, np.ndarray]], n: int | None = None, num_classes: int = 10):
        if n is None:
            n = next(np.asarray(a).shape[-1] for rec in arrays.values() for a in rec.values())
        base = RunSpec(data=DataSpec(), model="mlp", recipe=TINY_RECIPE)
        return ScoreContext(base=base, labels=np.zeros(n, dtype=np.int64), num_classes=num_classes,
                            runs={base: FakeRun(arrays)})

    return make


def _registry_copy(monkeypatch, module: Any, attr: str, kind: str) -> Registry:
    """A copy of `module.attr` in its place, so what a test registers leaves the real registry untouched."""
    copy: Registry = Registry(kind)
    for name, cls in getattr(module, attr).items():
        copy.register(name, cls)
    monkeypatch.setattr(module, attr, copy)
    return copy


@pytest.fixture
def fresh(monkeypatch) -> Registry:
    """A copy of the proxy registry."""
    return _registry_copy(monkeypatch, registry, "PROXIES", "proxy")


@pytest.fixture
def fresh_tasks(monkeypatch) -> Registry:
    """A copy of the task registry."""
    from harness.tasks import base

    return _registry_copy(monkeypatch, base, "TASKS", "task")


@pytest.fixture
def forget():
    """Unregister the recorders a test registered (append their names), with their cached key digests."""
    from harness.recorders import RECORDERS, base

    names: list[str] = []
    yield names
    for name in names:
        RECORDERS.remove(name)
        base._DIGESTS.pop(name, None)


@pytest.fixture
def young_gc_in_accelerate(monkeypatch):
    """accelerate runs a full `gc.collect()` before and after every `auto_find_batch_size` attempt and every
    hyperparameter-search trial (`release_memory`), to free CUDA memory. On the CPU it frees nothing a test reads,
    and each full collection walks the whole heap (larger in an xdist worker that has run hundreds of tests): a
    5-retry test spent 7 of its 10 s in 20 of them in a fresh process. Only the youngest generation here."""
    import gc
    from types import SimpleNamespace

    try:
        from accelerate.utils import memory
    except ImportError:  # the test importorskips transformers itself
        return
    monkeypatch.setattr(memory, "gc", SimpleNamespace(collect=lambda generation=0: gc.collect(0)))


@pytest.fixture
def young_gc_in_lightning(monkeypatch):
    """Lightning's batch size finder runs a full `gc.collect()` around every trial (`garbage_collection_cuda`), for
    CUDA memory: as `young_gc_in_accelerate`, only the youngest generation here."""
    import gc
    from types import SimpleNamespace

    try:
        from lightning.pytorch.utilities import memory
    except ImportError:  # the test importorskips lightning itself
        return
    monkeypatch.setattr(memory, "gc", SimpleNamespace(collect=lambda generation=0: gc.collect(0)))
