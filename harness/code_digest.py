"""A digest of the code of something registered outside memprox (a model factory, a recorder class):
the run store addresses memprox's own by name and version, and a user's by name alone would serve a
changed model or recorder the stored arrays of its predecessor. Its source is hashed, with the source
of the functions and classes of its own module it names (a factory's model class, its blocks), of its
base classes from that module, and the plain values (numbers, text, tuples of them) of that module
it reads. Not seen: helpers and values of other modules, and mutable module state (lists, dicts):
a user who changes those bumps the recorder's `version` or renames the model."""

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
    if inspect.isclass(obj):  # an own base class's methods run as this class's (an inherited `on_batch`)
        for base in obj.__mro__[1:]:
            if base.__module__ == obj.__module__:
                text += _code(base, seen)
    for function in functions:
        for named in function.__code__.co_names:
            if named not in function.__globals__:
                continue
            value = function.__globals__[named]
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == obj.__module__:
                text += _code(value, seen)
            elif _is_setting(value):  # `HIDDEN = 256` widened the model but served the 32-wide one's runs
                text += f"\n{named} = {value!r}"
    return text


def _is_setting(value: Any) -> bool:
    """A plain module-level value whose repr is its content in every process: numbers, text, None and
    tuples of them (not a set or dict: a set's order follows the process's string hash seed)."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    return isinstance(value, tuple) and all(_is_setting(v) for v in value)
