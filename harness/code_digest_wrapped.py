"""The functions behind a wrapper for the code digest (`harness.code_digest`): the function a `functools.wraps`
wrapper, a cache (`functools.cache`) or a method's descriptor holds, and a user decorator's wrapper's own code,
which `inspect` hides behind the wrapped function's source. Moved out of `code_digest` (its size limit)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from harness.code_digest_user import OWN, user_module
from harness.code_digest_values import _consts


def unwrap(function: Any) -> Any:
    """The function `function` wraps (`functools.wraps`), whose source its digest reads; itself where
    its `__wrapped__` chain loops."""
    try:
        return inspect.unwrap(function)
    except ValueError:
        return function


def cached(value: Any) -> Any:
    """The function a cache or other wrapper that is no function holds (`functools.cache`'s); None for any other."""
    if inspect.isfunction(value) or inspect.isclass(value) or not callable(value):
        return None
    try:
        inner = inspect.unwrap(value)
    except Exception:  # a `__wrapped__` loop, a `__getattr__` raising anything
        return None
    return inner if inspect.isfunction(inner) else None


def wrapper_code(function: Any) -> str:
    """The code of a wrapper (`functools.wraps`) of a user module, whose source `inspect` gives as the wrapped
    function's: a decorator's `return f(*a) * 2` -> `* 3` kept the digest. "" for memprox's or a package's."""
    of = function.__globals__.get("__name__")
    if not isinstance(of, str) or of.partition(".")[0] in OWN or not (of == function.__module__ or user_module(of)):
        return ""
    try:
        return "\nwrapper " + inspect.getsource(function.__code__)
    except (OSError, TypeError):
        code = function.__code__
        return "\nwrapper " + repr((code.co_code, _consts(code), code.co_names))


def functions(value: Any) -> list[Any]:
    """The functions behind a class attribute: a method, a staticmethod's or classmethod's function,
    a property's getter, setter and deleter (their reads were not followed), a `functools.cached_property`'s
    function and the function a cache holds (`@functools.cache` on a method, `fn = acts.cached_act`: their
    reads, or the cached function's code, were unseen: `cfg.W` 1 -> 2 kept the digest, digest2_29)."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, functools.cached_property):
        value = value.func
    inner = cached(value)
    value = inner if inner is not None and not isinstance(value, property) else value
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if inspect.isfunction(f)]
    return [value] if inspect.isfunction(value) else []
