"""A digest of the code of something registered outside memprox (a model factory, a recorder class):
the run store addresses memprox's own by name and version, and a user's by name alone would serve a
changed model or recorder the stored arrays of its predecessor. Its source is hashed, with the source
of the functions and classes of its own module it names (a factory's model class, its blocks)."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any


def code_digest(obj: Any, length: int = 16) -> str:
    """The first `length` hex digits of the SHA-256 of `obj`'s code (`_code`)."""
    return hashlib.sha256(_code(obj, set()).encode()).hexdigest()[:length]


def _code(obj: Any, seen: set[int]) -> str:
    """Its source (the compiled code where none is found: a notebook's class), with the source of
    the functions and classes of its own module it names (a factory's model class, its blocks)."""
    if id(obj) in seen:
        return ""
    seen.add(id(obj))
    functions = [obj] if inspect.isfunction(obj) else [f for f in vars(obj).values() if inspect.isfunction(f)]
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):
        text = repr([(f.__code__.co_code, f.__code__.co_consts, f.__code__.co_names) for f in functions])
    for function in functions:
        for named in function.__code__.co_names:
            value = function.__globals__.get(named)
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == obj.__module__:
                text += _code(value, seen)
    return text
