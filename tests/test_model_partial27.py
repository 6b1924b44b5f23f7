"""A model registered as a `functools.partial` of a factory in a user's module: the worker check asks
which module registered it, and a partial's own `__module__` is functools, so the check refused it as
"registered by functools, which does not register it when imported" (digestattack27)."""

from __future__ import annotations

import functools

from harness.model_registry import MODELS, register_model, registered_here_only


def _wide(input_shape, num_classes, width=8):  # pragma: no cover - never built here
    raise NotImplementedError


def test_a_partial_factory_is_named_by_its_functions_module() -> None:
    name = "wide_partial27"
    register_model(name, "a partial of a user's factory")(functools.partial(_wide, width=32))
    try:
        assert registered_here_only(name) == __name__
    finally:
        MODELS.remove(name)
    assert registered_here_only("small_cnn") is None  # memprox's own
