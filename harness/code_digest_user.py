"""The code outside a digested object's own module that the code digest (`harness.code_digest`) follows:
the user's own modules (a `my_blocks.py` beside the model's module, another module of the user's
package), never memprox's own (addressed by its version), the standard library or an installed
package (torch, numpy, anything under site-packages: hashing those would make a key depend on the
machine). Before, only the digested object's own module was read: a base class, a block class or a
setting of another module of the user's (`class Net(my_blocks.Base)`, `config.SCALE` in a method)
could change and the old model's runs were served as the new one's."""

from __future__ import annotations

import dis
import functools
import inspect
import os
import site
import sys
import sysconfig
from pathlib import PurePath
from types import CodeType, ModuleType
from typing import Any

#: memprox's own top-level packages (as `harness.provenance.OWN`): their code is addressed by memprox's version.
OWN = ("harness", "proxies", "baselines")

_MISSING = object()


def user_module(name: str) -> bool:
    """Whether the module `name` (imported in this process) is the user's own code: it has a source
    file, is not memprox's own or the standard library, and its file is not under site-packages
    (or dist-packages) nor the standard library's folders."""
    top = name.partition(".")[0]
    if top in OWN or top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    file = getattr(sys.modules.get(name), "__file__", None)
    return isinstance(file, str) and not _installed(file)


def followed(value: Any, module: str) -> bool:
    """Whether the digest reads the code of function or class `value` read from code of `module`: one of
    that module, or of a user module (`user_module`)."""
    of = getattr(value, "__module__", None)
    return isinstance(of, str) and (of == module or user_module(of))


@functools.lru_cache(maxsize=4096)
def _installed(file: str) -> bool:
    """Whether `file` is an installed package's or the standard library's (by its real path)."""
    real = os.path.realpath(file)
    if {"site-packages", "dist-packages"} & set(PurePath(real).parts):
        return True
    return any(real.startswith(root + os.sep) for root in _roots())


@functools.lru_cache(maxsize=1)
def _roots() -> tuple[str, ...]:
    """The folders of installed packages and of the standard library."""
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    paths += [sysconfig.get_path(k) for k in ("purelib", "platlib", "stdlib")]
    return tuple(sorted({os.path.realpath(p) for p in paths if p}))


def module_reads(code: CodeType, namespace: dict[str, Any]) -> list[tuple[str, Any]]:
    """The values `code` (one code object: `nested_codes` gives the rest) reads through a user module
    it holds as a global: `config.SCALE`, `pkg.sub.NAME`, `blocks.Block`, as ("module.NAME", value),
    in the order it reads them, each once. A chain stops at the first value that is no module."""
    found: dict[str, Any] = {}
    current: ModuleType | None = None
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            value = namespace.get(instruction.argval)
            current = value if inspect.ismodule(value) and user_module(value.__name__) else None
        elif current is not None and instruction.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            name = instruction.argval
            value = vars(current).get(name, _MISSING) if isinstance(name, str) else _MISSING
            if inspect.ismodule(value) and user_module(value.__name__):
                current = value
                continue
            if value is not _MISSING:
                found.setdefault(f"{current.__name__}.{name}", value)
            current = None
        else:
            current = None
    return list(found.items())


def instance_state(value: Any) -> dict[str, Any]:
    """What an instance of a user class holds: its attributes (`__dict__` and slots), by name; for a
    torch module, its own attributes without torch's bookkeeping (hooks, the `training` flag), its
    submodules, and the names, dtypes and shapes of its parameters and buffers (their values are its
    random initialisation, another in every process)."""
    held = getattr(value, "__dict__", None)
    state = dict(held) if isinstance(held, dict) else {}
    for cls in type(value).__mro__:
        slots = vars(cls).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                try:
                    state.setdefault(slot, getattr(value, slot))
                except Exception:  # an empty slot, a property that raises: not held
                    continue
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.nn.Module):
        state = {k: v for k, v in state.items() if k == "_modules" or k not in _torch_module_keys()}
        try:
            state["<parameters>"] = [(n, str(p.dtype), tuple(p.shape)) for n, p in value.named_parameters()]
            state["<buffers>"] = [(n, str(b.dtype), tuple(b.shape)) for n, b in value.named_buffers()]
        except Exception as e:  # a lazy module's parameter has no shape yet: its kind says so
            state["<parameters>"] = type(e).__name__
    return dict(sorted(state.items(), key=lambda item: str(item[0])))


@functools.lru_cache(maxsize=1)
def _torch_module_keys() -> frozenset[str]:
    """The attributes every torch module sets (`_parameters`, `_forward_hooks`, `training`, ...)."""
    import torch

    return frozenset(vars(torch.nn.Module()))
