"""The model registry: a name -> a factory `(input_shape, num_classes) -> nn.Module`. Its own module
so that model modules (harness.models, harness.text_models, a user's) register into it without
importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from harness.code_digest import code_digest
from harness.registry import Registry

#: (C, H, W): images as they are, (N, D) features as (D, 1, 1), token ids as (L, 1, 1)
Shape = tuple[int, int, int]
Factory = Callable[[Shape, int], nn.Module]


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


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised model; an unknown name is a HarnessError listing the valid ones.
    `input_shape` is a sample's shape (`x.shape[1:]`), which the loaders make three long."""
    return MODELS.get(name).factory(as_shape(input_shape), num_classes)


def as_shape(input_shape: tuple[int, ...]) -> Shape:
    """A factory's (C, H, W) from a sample's shape; one of another length is a loader's bug."""
    if len(input_shape) != 3:
        raise ValueError(f"a model's input shape is (C, H, W), got {input_shape}: features are stored as "
                         "(D, 1, 1) and token ids as (L, 1, 1)")
    c, h, w = input_shape
    return c, h, w


def model_fingerprint(name: str) -> str:
    """A digest of the code of model `name` when it is registered outside memprox (a script, a
    notebook, a user's module), else "": the run store addressed such a model by its name alone, so
    a re-registered `tiny_mlp` of 256 units got the stored runs of its 16-unit predecessor back."""
    factory = MODELS.get(name).factory
    if registered_here_only(name) is None:  # memprox's own
        return ""
    return code_digest(factory)


def registered_here_only(name: str) -> str | None:
    """The module that registered model `name` when a fresh process would not know it (a factory
    defined in a script or notebook: models have no plugin entry points), else None."""
    entry = MODELS[name] if name in MODELS else None
    if entry is None:
        return None
    module = getattr(entry.factory, "func", entry.factory).__module__  # a partial's is functools: its function's
    return None if module.startswith("harness.") else module
