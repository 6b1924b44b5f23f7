"""How the code digest (`harness.code_digest`) reads a module global of the user's that is no setting, list or code:
by the text of the statement that makes it where it is made by code alone (`written`), else by its value, with the
data files read into it at import where its value does not show them. Split from `code_digest_user` (at its size
limit)."""

from __future__ import annotations

import sys
from typing import Any

from harness.code_digest_user import _MISSING, ContainerRead, _assigned, _data, _read_at_import
from harness.code_digest_values import _torch_module, shown, stateful


def written(module: str, name: str, value: Any, seen: dict[int, Any], whole: bool = True) -> str | None:
    """The text of module global `name`'s one top-level assignment where `value` is its value and it is made
    from code alone (`BUF = np.zeros(4)`, `PROJ = torch.randn(8, 4)`, `ACT = nn.LazyLinear(3)`) and no other
    top-level statement changes it (`ACT.negative_slope = 0.2`, `BUF[0] = 1`); None for any other: read by value.
    Its value by content was not the same in every process: state a run fills in place (`BUF[0] += 1`, a lazy
    module's first forward) gave a digest after a run that a fresh process's refused, and a random one
    (`torch.randn` unseeded) was refused in every fresh process, where the text is the same in each (attdig30).
    Left in `seen` as a module list is (`read_containers`): its edit, in a file not reloaded, is refused in process."""
    namespace = getattr(sys.modules.get(module), "__dict__", {})
    if namespace.get(name, _MISSING) is not value or not (whole or _data(value)):  # a wrapper's `__module__`
        return None  # (functools.wraps) is another's; a module or a function made by no file
    assigned = _assigned(module, name)
    if not whole:  # no array, tensor or torch module (`SimpleNamespace(**json.load(f))`): its files alone, if any
        files = _read_at_import(module, name, seen)
        return "".join(t for t, _, _ in assigned) + files if files else None
    if len(assigned) != 1 or assigned[0][1] is not None or any(_data(namespace.get(n)) for n in assigned[0][2]):
        return None
    if any(root == name for _, root, _ in _assigned(module, "<effects>")):
        return None
    marker = ContainerRead(module, name)
    seen[id(marker)] = marker
    return assigned[0][0] + _read_at_import(module, name, seen)


def global_text(module: str, name: str, value: Any, seen: dict[int, Any]) -> str:
    """A module global that is no setting, list or code of the user's, as `code_digest._global` hashes it: by the
    text that makes it (`written`), else by value (`shown`, a torch module's repr), with the data files read into
    it at import: `NET.load_state_dict(torch.load("w.pt"))` read NET by its repr, which shows no weights, and a
    new `w.pt` kept the digest (attdig31). "" for none."""
    made = written(module, name, value, seen, stateful(value))
    if made is not None:
        return f"written {made}"
    content = shown(value)  # an array by its bytes holds what a file gave it: the file's text adds nothing but churn
    if content:  # (`W = np.load(HERE / "w.npy")` read by value at 9b2283e got a new digest, trained again: attdig2_31)
        _read_at_import(module, name, seen)  # its file still left in `seen`: edited since import, refused in process
        return content
    part = _torch_module(value)
    return part + _read_at_import(module, name, seen) if part else part
