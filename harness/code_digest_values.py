"""Values as text for the code digest (`harness.code_digest`): the same text in every process (a set or
frozenset in sorted order, not its string hash seed's, nested code by its content, not its address), an
array by its bytes, a torch module by its repr. Here, not in `code_digest`, for that module's size limit."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import PurePath
from types import CodeType, GenericAlias
from typing import Any

#: Above this many bits an int setting is hashed in hex: its repr fails past the process's
#: int-to-text digit limit (4300 by default, 640 at least), and `BIG = 10**5000` broke registration.
_INT_REPR_BITS = 2000

def _array(value: Any) -> str:
    """A numpy array or torch tensor by its dtype, shape and a SHA-256 of its bytes; "" for any other value."""
    kind = type(value).__module__.partition(".")[0]
    data: Any
    try:  # its bytes as `tobytes()` gives them, hashed where they lie: a copy doubled a 500 MB array's memory
        if kind == "numpy" and hasattr(value, "tobytes") and not value.dtype.hasobject:  # objects: their addresses
            import numpy as np

            plain = type(value) in (np.ndarray, np.memmap) and value.dtype.itemsize  # a masked array's are filled
            data = np.ascontiguousarray(value).reshape(-1).view(np.uint8) if plain else value.tobytes()
            dtype, shape = str(value.dtype), tuple(value.shape)
        elif kind == "torch" and type(value).__name__ in ("Tensor", "Parameter"):
            import torch

            flat = value.detach().cpu().contiguous().reshape(-1).view(dtype=torch.uint8)
            data, dtype, shape = flat.numpy(), str(value.dtype), tuple(value.shape)
        else:
            return ""
    except Exception:  # a sparse, quantized or meta tensor, an object array: not seen
        return ""
    return f"array({dtype}, {shape}, {hashlib.sha256(data).hexdigest()})"


def shown(value: Any) -> str:
    """A value that is no setting by its content, the same in every process: an array by its bytes (`_array`), a
    compiled pattern, a path, a torch dtype or device or a typing generic by its repr; "" for any other value."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, re.Pattern):
        return f"re.compile({value.pattern!r}, {int(value.flags)})"
    if isinstance(value, PurePath | GenericAlias) or kind in ("torch.dtype", "torch.device") or \
            type(value).__module__ == "typing":
        return f"{kind} {value!r}"
    return _array(value)


def stateful(value: Any) -> bool:
    """Whether `value` is a numpy array, a torch tensor or a torch module: what a run may change in place, or
    a random initialisation makes another in every process (`code_digest_globals.written`)."""
    kind = type(value).__module__.partition(".")[0]
    torch = sys.modules.get("torch") if kind == "torch" else None
    return (kind == "numpy" and hasattr(value, "dtype") and hasattr(value, "tobytes")) or \
        (torch is not None and isinstance(value, torch.Tensor | torch.nn.Module))


def _torch_module(value: Any) -> str:
    """A torch module (an installed package's: `nn.LeakyReLU(0.1)`) by its repr, which shows its settings and
    its parameters' shapes, not their values; "" for any other value or a repr holding an address."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.nn.Module):
        return ""
    try:
        text = repr(value)
    except Exception:  # a module whose extra_repr fails
        return ""
    return "" if " at 0x" in text else f"{type(value).__module__}.{type(value).__qualname__} {text}"


def _consts(code: CodeType) -> tuple[Any, ...]:
    """`co_consts` with nested code as its content: a code object's repr holds its address, which
    gave a notebook class with a comprehension another digest in every process."""
    return tuple(_const(c) for c in code.co_consts)


def _const(c: Any) -> Any:
    """A constant as text that is the same in every process: nested code by its content, a frozenset
    (`x in {"a", "b"}` compiles to one) in sorted order, not in the order of the process's string hash
    seed, which gave a notebook's function another digest in every process."""
    if isinstance(c, CodeType):
        return c.co_code, _consts(c), c.co_names
    if isinstance(c, frozenset):
        return "frozenset", tuple(sorted(repr(_const(v)) for v in c))
    if isinstance(c, tuple):
        return tuple(_const(v) for v in c)
    return c


def _is_setting(value: Any) -> bool:
    """A plain module-level value whose repr is its content in every process: numbers, text, None and
    tuples of them (not a set or dict: a set's order follows the process's string hash seed)."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    return isinstance(value, tuple) and all(_is_setting(v) for v in value)


def _repr(value: Any) -> str:
    """`repr(value)` of a setting, with an int of more than `_INT_REPR_BITS` bits in hex."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, int) and value.bit_length() > _INT_REPR_BITS:
        return hex(value)
    return repr(value)
