"""The top-level statements of the user's other modules that change a module list, dict or set a digest reads, for
the code digest (`harness.code_digest`): `registry.BLOCKS.append(Conv)`, `from registry import BLOCKS` then
`BLOCKS["conv"] = Conv`, `registry.SIZES.update(head=8)`, `@registry.register` where `register` fills it. Before
digest31 a list written empty (`BLOCKS = []`) was read as a cache a run fills, by its text alone, so an edit of
what another module put there at import kept the digest and served the old model's stored runs as the edited
one's. Each such statement is hashed by its text and the code of the user's it names (`Conv`); only modules
loaded in this process are read: a module that fills the list but that a fresh process does not import gives
that process another model and another digest, and the executors refuse it before training."""

from __future__ import annotations

import ast
import inspect
import linecache
import re
import sys
from typing import Any

from harness.code_digest_changes import module_tree, mutators, names
from harness.code_digest_user import ContainerRead, user_module

#: A top-level statement: its text, the dotted names it changes in place (`registry.BLOCKS`), the dotted names
#: it calls or decorates with (`registry.register`), the dotted names it reads.
Statement = tuple[str, tuple[str, ...], tuple[str, ...], frozenset[str]]
#: file -> (the `linecache` lines parsed, its top-level statements that change or call something, its mutators).
_PARSED: dict[str, tuple[list[str], list[Statement], dict[str, set[str]]]] = {}
#: file -> (its module's `__spec__`, its statements' texts as first read since it was (re)loaded): `FillRead`'s.
_FIRST: dict[str, tuple[Any, list[str]]] = {}
_MISSING = object()
#: (module, name, id of the value) of the last `fills` of a digest's walk (one given `seen`), and what it found:
#: `code_digest_user.code_named` asks again at once for the code it names, and half of a 50-module project's
#: digest (270 ms on a loaded box) was those two looks through every module (attdig31). Any other call resets it.
_LAST: list[Any] = [None, []]
#: (the size of `sys.modules`, its last name), the user modules then (`_user_modules`).
_USER: list[Any] = [None, []]


def fills(module: str, name: str, value: Any, seen: dict[int, Any] | None = None) -> list[tuple[str, str, list[Any]]]:
    """Each top-level statement of another loaded user module that changes `value` (module `module`'s `name`) in
    place, directly or by a function of `module` that changes it, as (its module, its text, the functions and
    classes of the user's it names), modules in name order. Each such module is left in `seen` for the in-process
    edit check (`FillRead`)."""
    key = (module, name, id(value))
    if seen is None and _LAST[0] == key:  # `code_user.code_named` right after `container` read the same value
        return list(_LAST[1])
    _LAST[:] = [key if seen is not None else None, []]
    own = getattr(sys.modules.get(module), "__file__", None)
    changers = {f for f, changed in _parsed(own)[2].items() if name in changed} if isinstance(own, str) else set()
    found: list[tuple[str, str, list[Any]]] = []
    for other in _user_modules():
        held = sys.modules.get(other)
        file = getattr(held, "__file__", None)
        if other == module or not isinstance(file, str) or file == own:
            continue
        if not _may_fill(file, name, changers):  # cannot change it: not parsed
            continue
        namespace = vars(held)
        statements = _parsed(file)[1]
        if file not in _FIRST or _FIRST[file][0] is not namespace.get("__spec__"):
            _FIRST[file] = (namespace.get("__spec__"), [s[0] for s in statements])
        before = len(found)
        for text, targets, called, read in statements:
            hit = any(_resolved(t, namespace) is value for t in targets)
            hit = hit or any(_changer(_resolved(c, namespace), module, changers) for c in called)
            if hit:
                code = [v for v in (_resolved(r, namespace) for r in sorted(read))
                        if (inspect.isfunction(v) or inspect.isclass(v)) and _followed(v, other)]
                found.append((other, text, list({id(v): v for v in code}.values())))
        if seen is not None and len(found) > before:
            marker = FillRead(other, name, file)
            seen[id(marker)] = marker
    _LAST[1] = found
    return found


def home(module: str, name: str, value: Any) -> str:
    """The user module whose top-level assignment binds `value`, where `module` imported it by name (`from
    registry import REG`): the fills are looked for by the module that owns the value. Before attdig31 a model
    reading `REG` so imported, filled by `@register("conv")` in a module its package's `__init__` imports, read
    none of the fills: an edit of `Conv` kept the digest. `module` itself where it binds it, or none does."""
    for candidate in [module, *_user_modules()]:
        held = sys.modules.get(candidate)
        file = getattr(held, "__file__", None)
        if held is not None and isinstance(file, str) and vars(held).get(name, _MISSING) is value and \
                _binds(file, name):
            return candidate
    return module


def _binds(file: str, name: str) -> bool:
    """Whether a top-level assignment of `file` binds `name` (`REG = {}`, `REG: dict = {}`)."""
    linecache.checkcache(file)
    tree = module_tree(file, linecache.getlines(file))
    for node in tree.body if tree is not None else []:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


class FillRead(ContainerRead):
    """A module whose top-level statements fill another's list (`fills`), for `code_source.edited_since_import`:
    edited since its import, this process holds the list as it filled it then, and the digest reads the edit."""

    def __init__(self, module: str, name: str, file: str) -> None:
        super().__init__(module, f"{module} (fills {name} at import)")
        self.file = file

    def edited(self) -> bool:
        """Whether the module's top-level statements that change or call something are not those first read
        since it was (re)loaded."""
        first = _FIRST.get(self.file)
        return first is not None and [s[0] for s in _parsed(self.file)[1]] != first[1]


def _user_modules() -> list[str]:
    """The names of the user modules imported, sorted (`user_module`); kept while `sys.modules` holds as many
    names, the last the same (a module imported or removed since changes that): checking 2,000 modules with
    torch imported took 15 ms, twice per module list read and digest."""
    key = (len(sys.modules), next(reversed(sys.modules.keys()), ""))
    if _USER[0] != key:
        _USER[:] = [key, sorted(m for m in list(sys.modules) if user_module(m))]
    return list(_USER[1])


def _may_fill(file: str, name: str, changers: set[str]) -> bool:
    """Whether a line of `file` may change `name` (`name.append(`, `name[`, `name +=`, `name =`), import it under
    another name, or call a function of its module that changes it: a file with none is not parsed."""
    linecache.checkcache(file)
    lines = linecache.getlines(file)
    change = re.compile(rf"\b{re.escape(name)}\s*(\.\s*\w+\s*\(|\[|[-+*/|&^]?=(?!=))")
    calls = re.compile(r"\b(" + "|".join(map(re.escape, sorted(changers))) + r")\b") if changers else None
    return any(change.search(line) or ("import" in line and name in line) or
               (calls is not None and calls.search(line)) for line in lines)


def _followed(value: Any, module: str) -> bool:
    of = getattr(value, "__module__", None)
    return isinstance(of, str) and (of == module or user_module(of))


def _changer(value: Any, module: str, changers: set[str]) -> bool:
    """Whether `value` is a function of `module` that changes the name (`changers`: `code_digest_changes.mutators`)."""
    return inspect.isfunction(value) and value.__module__ == module and value.__name__ in changers


def _resolved(dotted: str, namespace: dict[str, Any]) -> Any:
    """The value `dotted` names in `namespace`, through modules only (`registry.BLOCKS`); `_MISSING` for none."""
    root, *rest = dotted.split(".")
    value = namespace.get(root, _MISSING)
    for part in rest:
        value = vars(value).get(part, _MISSING) if inspect.ismodule(value) else _MISSING
    return value


def _dotted(node: ast.expr) -> str:
    """`a.b.c` as text for a name or a chain of attributes on one; "" for another expression."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def _parsed(file: str) -> tuple[list[str], list[Statement], dict[str, set[str]]]:
    """`file`'s top-level statements that may change another module's value (`Statement`) and its mutators; one
    parse per file and process, again once the file is edited."""
    linecache.checkcache(file)
    lines = linecache.getlines(file)
    cached = _PARSED.get(file)
    if cached is not None and cached[0] is lines:
        return cached
    tree = module_tree(file, lines)
    statements: list[Statement] = []
    for node in tree.body if tree is not None else []:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        decorators = node.decorator_list if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
            else None  # a definition changes something by its decorators alone (`@registry.register`)
        walked = [n for d in decorators for n in ast.walk(d)] if decorators is not None else list(ast.walk(node))
        targets: list[str] = []
        called = [_dotted(d) for d in decorators or []]
        for n in walked:
            if isinstance(n, ast.Call):
                called.append(_dotted(n.func))
                if isinstance(n.func, ast.Attribute):
                    targets.append(_dotted(n.func.value))  # `registry.BLOCKS.append(...)`
            elif isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store | ast.Del):
                targets.append(_dotted(n.value))  # `BLOCKS["conv"] = Conv`
            elif isinstance(n, ast.AugAssign):
                targets.append(_dotted(n.target))  # `BLOCKS += [Conv]`
            elif isinstance(n, ast.Assign):
                targets += [_dotted(t) for t in n.targets if isinstance(t, ast.Attribute)]  # `registry.W = [8]`
        targets, called = [t for t in targets if t], [c for c in called if c]
        if targets or called:
            statements.append((ast.unparse(node), tuple(dict.fromkeys(targets)), tuple(dict.fromkeys(called)),
                               names(node)))
    cached = _PARSED[file] = (lines, statements, mutators(tree) if tree is not None else {})
    return cached
