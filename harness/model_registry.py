"""The model registry: a name -> a factory `(input_shape, num_classes) -> nn.Module`. Its own module
so that model modules (harness.models, harness.text_models, a user's) register into it without
importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from harness.registry import Registry

Factory = Callable[[tuple[int, int, int], int], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    factory: Factory


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, description: str):
    def wrap(factory: Factory) -> Factory:
        MODELS.register(name, ModelEntry(name, description, factory))
        return factory

    return wrap


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A freshly initialised model; an unknown name is a HarnessError listing the valid ones."""
    return MODELS.get(name).factory(input_shape, num_classes)


def registered_here_only(name: str) -> str | None:
    """The module that registered model `name` when a fresh process would not know it (a factory
    defined in a script or notebook: models have no plugin entry points), else None."""
    entry = MODELS[name] if name in MODELS else None
    if entry is None or entry.factory.__module__.startswith("harness."):
        return None
    return entry.factory.__module__
