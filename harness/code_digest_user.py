"""The code outside a digested object's own module that the code digest (`harness.code_digest`) follows:
the user's own modules (a `my_blocks.py` beside the model's module, another module of the user's
package), never memprox's own (addressed by its version), the standard library or an installed
package (torch, numpy, anything under site-packages: hashing those would make a key depend on the
machine). Before, only the digested object's own module was read: a base class, a block class or a
setting of another module of the user's (`class Net(my_blocks.Base)`, `config.SCALE` in a method)
could change and the old model's runs were served as the new one's."""

from __future__ import annotations

import ast
import dis
import functools
import inspect
import linecache
import os
import re
import site
import sys
import sysconfig
from pathlib import PurePath
from types import CodeType, ModuleType
from typing import Any

from harness.code_digest_changes import Assignment, changes, effect, module_tree, mutators, names
from harness.code_digest_values import _repr

#: memprox's own top-level packages: their code is addressed by memprox's version (`harness.provenance`).
OWN = ("harness", "proxies", "baselines")

_MISSING = object()


def callee(call: ast.Call) -> str:
    """The name a call calls: `load` of `np.load(...)`, `open`; "" for another callee (`f()()`)."""
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def user_module(name: str) -> bool:
    """Whether the module `name` (imported in this process) is the user's own code: it has a source
    file, is not memprox's own or the standard library, and its file is not under site-packages
    (or dist-packages) nor the standard library's folders."""
    top = name.partition(".")[0]
    if top in OWN or top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file is None and module is not None:  # a namespace package (no __init__.py): `ns.config.SCALE` was not read
        paths = list(getattr(module, "__path__", None) or ())
        return bool(paths) and all(isinstance(p, str) and not _installed(p) for p in paths)
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
        if instruction.opname == "EXTENDED_ARG":  # the next one's argument past 255: `m128.Block` read no Block
            continue
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


def own_dict(value: Any) -> dict[str, Any] | None:
    """`value.__dict__`, None where it has none, without asking its class's `__getattr__`: a class with
    slots asks it for `__dict__`, and one raising KeyError there crashed the digest (digestattack29)."""
    try:
        held = object.__getattribute__(value, "__dict__")
    except AttributeError:
        return None
    return held if isinstance(held, dict) else None


def instance_state(value: Any) -> dict[str, Any]:
    """What an instance of a user class holds: its attributes (`__dict__` and slots), by name; for a
    torch module, its own attributes without torch's bookkeeping (hooks, the `training` flag), its
    submodules, and the names, dtypes and shapes of its parameters and buffers (their values are its
    random initialisation, another in every process)."""
    held = own_dict(value)
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
    for key, held_value in state.items():  # a set of plain values by its sorted text: it was its type alone, so
        if isinstance(held_value, set | frozenset):  # `Config(tags={"a", "b"})` -> {"a", "c"} kept the digest
            state[key] = _plain(held_value, set()) or held_value
    return dict(sorted(state.items(), key=lambda item: str(item[0])))


@functools.lru_cache(maxsize=1)
def _torch_module_keys() -> frozenset[str]:
    """The attributes every torch module sets (`_parameters`, `_forward_hooks`, `training`, ...)."""
    import torch

    return frozenset(vars(torch.nn.Module()))


#: A line that may start a top-level call or setting through a module (`torch.manual_seed(`, `nn.ReLU.forward =`).
_EFFECT = re.compile(r"[A-Za-z_]\w*(\.\w+)+\s*(\(|(\*\*|//|>>|<<|[-+*/%&|^@])?=|:)")  # `a.b: T = v` too
#: file -> (the `linecache` lines parsed, name -> each top-level assignment of it: its text, its value as
#: `_plain` text where it is a literal, the names it reads): one parse of a module per process, again
#: once its file is edited (`linecache.checkcache` hands out new lines).
_ASSIGNED: dict[str, tuple[list[str], dict[str, list[Assignment]]]] = {}
#: file -> (its module's `__spec__`, its assignments as first parsed since that module was (re)loaded: a
#: reload sets a new spec): what `ContainerRead.edited` compares the file's assignments now with.
_FIRST: dict[str, tuple[Any, dict[str, list[Assignment]]]] = {}


class ContainerRead:
    """A module-level list, dict or set a digest read (`container`), for `code_source.edited_since_import`:
    its module as `__module__`, its name as `__name__` and `__qualname__`."""

    def __init__(self, module: str, name: str) -> None:
        self.__module__, self.__name__, self.__qualname__ = module, name, name

    def edited(self) -> bool:
        """Whether its assignments in its module's file are not those this process first read there
        since the module was (re)loaded: the digest reads the file's text, and `ACTS = [nn.ReLU]` ->
        `[nn.GELU]` in a file not reloaded kept the imported list training under the edited text's
        address under `--executor inprocess` (a fresh process then built the new model and was served
        those runs). Unseen when the file was edited before this process first digested it."""
        now = [text for text, _, _ in _assigned(self.__module__, self.__name__)]
        file = getattr(sys.modules.get(self.__module__), "__file__", None)
        first = _FIRST[file][1] if isinstance(file, str) and file in _FIRST else {}
        return now != [text for text, _, _ in first.get(self.__name__, [])]


def read_containers(seen: dict[int, Any]) -> list[ContainerRead]:
    """The module-level lists, dicts and sets a digest's walk read (`container` leaves them in `seen`)."""
    return [v for v in seen.values() if isinstance(v, ContainerRead)]


def container(named: str, value: Any, module: str, read: dict[str, str], seen: dict[int, Any] | None = None) -> str:
    """A module-level list, dict or set a function reads (`LAYERS` or `config.LAYERS`) by the text of its
    assignments in the module (`LAYERS = [64, 32]`: comments and layout aside), and by its value too
    (when made of plain values; named in `read`) unless that is still the literal written, or it is
    written empty (`{}`: a cache a run fills) or made from code alone (`defaultdict(list)`): the same in
    every process. So one computed from module values (`[BASE * i for i in range(3)]`), changed as the
    module ran (`LAYERS.append(WIDTH)`), imported, or edited in a file not reloaded since, is hashed by
    its value. `LAYERS = [64, 32]` -> `[128, 64]` kept the digest, and so did BASE = 8 -> 16 under SIZES."""
    name = named.rpartition(".")[2]
    if seen is not None:  # for `read_containers`: held there, so its id is no other object's
        marker = ContainerRead(module, name)
        seen[id(marker)] = marker
    namespace = getattr(sys.modules.get(module), "__dict__", {})
    assigned = _assigned(module, name)
    text = "".join(f"\n{named} written {t}" for t, _, _ in assigned)
    files = _read_at_import(module, name, seen)
    filled = _filled(module, name, value, seen)  # `other.BLOCKS.append(Conv)`: unread (digest31)
    fills = "".join(f"\n{named} filled by {of} {t}" for of, t, _ in filled)
    if filled:  # named where a fresh process, importing no filler, differs (`worker_imports`)
        read[f"{module}.{name}"] = "filled at import by " + ", ".join(sorted({of for of, _, _ in filled}))
    last = assigned[-1] if assigned else None
    from harness.code_digest_files import saved_by  # a cache loaded from the file the module saves it to

    saved = saved_by(module) if last is not None and last[1] is None else frozenset()
    if not filled and last is not None and (last[1] in ("list()", "dict()", "set()") if last[1] is not None else
                                            len(assigned) == 1 and not any(_data(namespace.get(n)) for n in last[2]
                                                                           if not _path(namespace.get(n), n, saved))):
        return text + files + fills  # its value is not read: `BIG = list(range(10**6))` was made text at every digest
    plain = _plain(value, set())
    if plain is not None and (last is None or last[1] != plain):  # by value: its files add nothing but churn
        read[f"{module}.{name}"] = plain  # (`CFG = json.load(open(HERE / "c.json"))`, read by value at 9b2283e,
        return text + fills + f"\n{named} = {plain}"  # got a new digest and trained again: attdig2_31)
    return text + files + fills


def displayed(module: str, name: str) -> bool:
    """Whether module list, tuple or dict `name` is first written as a display of items (`[Block, Other]`,
    `{"relu": my_act}`, a comprehension), not empty nor by a call: the code and instances of the user's it
    holds are read (`code_digest._global`); a cache written empty or `defaultdict(list)` and filled by a run
    is not, and keeps its digest."""
    assigned = _assigned(module, name)
    text = assigned[0][0] if assigned else ""
    return text[:1] in ("[", "(", "{") and text not in ("[]", "()", "{}")


def code_named(module: str, name: str) -> list[Any]:
    """The functions and classes of `module` or another user module that the assignments and changes of module
    list, dict or set `name` name (`W = make_widths()`, `W = cfg.widths()`, a decorator that registers into it,
    `code_digest_changes`), in the order written: the code that makes its value, unread where that value is not
    (a call's), so an edit of `make_widths` kept the digest (digest30)."""
    namespace = getattr(sys.modules.get(module), "__dict__", {})
    found: dict[int, Any] = {}
    for _, _, read in _assigned(module, name):
        for ref in sorted(read):
            root, *rest = ref.split(".")
            value = namespace.get(root, _MISSING)
            for part in rest:
                held = inspect.ismodule(value) and user_module(value.__name__)
                value = vars(value).get(part, _MISSING) if held else _MISSING
            if (inspect.isfunction(value) or inspect.isclass(value)) and followed(value, module):
                found.setdefault(id(value), value)
    held = namespace.get(name, _MISSING)
    if isinstance(held, list | dict | set):  # the code another module fills it with (`_filled`)
        found.update((id(v), v) for _, _, code in _filled(module, name, held, None) for v in code)
    return list(found.values())


def effects(modules: list[str]) -> str:
    """The top-level calls and attribute settings through a module (not memprox's) of each user module of
    `modules` (`code_digest_changes.effect`), as text; "" for none (the digest as before)."""
    text = ""
    for module in sorted(set(modules)):
        namespace = getattr(sys.modules.get(module), "__dict__", {})
        file = namespace.get("__file__")
        if not (isinstance(file, str) and user_module(module)):
            continue
        linecache.checkcache(file)
        lines = linecache.getlines(file, namespace)
        if not any(_EFFECT.match(line) for line in lines):  # no such line: its text is not parsed (one parse less)
            continue
        for line, root, _ in _assigned(module, "<effects>"):
            held = namespace.get(root or "")
            if inspect.ismodule(held) and held.__name__.partition(".")[0] not in OWN:
                text += f"\neffect {line}"
    return text


def _read_at_import(module: str, name: str, seen: dict[int, Any] | None) -> str:
    """The content of the data files the statements binding `name` in user module `module` read
    (`code_digest_files`: `np.load("w.npy")`'s edit kept the digest); "" for none."""
    from harness.code_digest_files import files_read

    return files_read(module, name, seen) if user_module(module) else ""


def _filled(module: str, name: str, value: Any, seen: dict[int, Any] | None) -> list[tuple[str, str, list[Any]]]:
    """What another user module's top-level statements put in `value` (`code_digest_fills`); none of memprox's."""
    from harness.code_digest_fills import fills, home

    return fills(home(module, name, value), name, value, seen) if user_module(module) else []


def _data(value: Any) -> bool:
    """A value, not code: not a function, class, module or None (`defaultdict(list)` reads code only)."""
    return value is not None and not callable(value) and not inspect.ismodule(value)


def _path(value: Any, name: str, saved: frozenset[str]) -> bool:
    """Whether `value` is a path (text or `PurePath`) that module value `name`'s module writes a file by."""
    return name in saved and isinstance(value, str | PurePath)


def _assigned(module: str, name: str) -> list[Assignment]:
    """Each top-level assignment of `name` in `module`'s file, in order: its text (`ast.unparse`d),
    its value's text where it is a literal (`_plain`), and the names it reads."""
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    file = namespace.get("__file__") if namespace is not None else None
    if not isinstance(file, str):
        return []
    linecache.checkcache(file)
    lines = linecache.getlines(file, namespace)
    cached = _ASSIGNED.get(file)
    if cached is None or cached[0] is not lines:
        found: dict[str, list[Assignment]] = {}
        tree = module_tree(file, lines)
        by = mutators(tree) if tree is not None else {}
        for node in tree.body if tree is not None else []:
            for target, assignment in _assignments(node) + changes(node, by) + effect(node):
                found.setdefault(target, []).append(assignment)
        cached = _ASSIGNED[file] = (lines, found)
    spec = namespace.get("__spec__") if namespace is not None else None
    if file not in _FIRST or _FIRST[file][0] is not spec:
        _FIRST[file] = (spec, cached[1])
    return cached[1].get(name, [])


def _assignments(node: ast.stmt) -> list[tuple[str, Assignment]]:
    """A top-level statement's assignments (`LAYERS = [64, 32]`, `LAYERS += [8]`) and changes of a module
    list or dict (`LAYERS.append(8)`, `SIZES["head"] = 8`: as text, reading the name itself, so the value
    is hashed), by the name they set. A change by a call or an item was unseen where the list was made
    by code alone (`LAYERS = [0] * 3` then `LAYERS.append(8)` -> `append(16)` kept the digest) or written
    empty (`LAYERS = []` then appends), and not compared by `ContainerRead.edited` (digestattack29)."""
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign) and node.value is not None:
        op = type(node.op).__name__ + " " if isinstance(node, ast.AugAssign) else ""
        read = names(node.value)
        assignment = (op + ast.unparse(node.value), None if op else _literal(node.value), read)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        found = [(t.id, assignment) for t in targets if isinstance(t, ast.Name)]
        items = [t.value.id for t in targets if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)]
        changed = "changed " + ast.unparse(node)
        return found + [(n, (changed, None, read | {n})) for n in items]
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
            isinstance(node.value.func, ast.Attribute) and isinstance(node.value.func.value, ast.Name):
        name = node.value.func.value.id
        read = names(node.value)
        return [(name, ("changed " + ast.unparse(node.value), None, read))]
    return []


def _literal(node: ast.expr) -> str | None:
    try:
        return _plain(ast.literal_eval(node), set())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _plain(value: Any, path: set[int]) -> str | None:
    """`value` as text when it is made of numbers, text, None, and lists, tuples, dicts and sets of them
    (a set in sorted order: its own follows the process's string hash seed); None for anything else."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return _repr(value)
    if not isinstance(value, list | tuple | dict | set | frozenset) or id(value) in path:
        return None
    path.add(id(value))
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    parts = []
    for key, item in items:
        texts = [_plain(item, path)] + ([_plain(key, path)] if isinstance(value, dict) else [])
        if any(t is None for t in texts):
            path.discard(id(value))
            return None
        parts.append(f"{texts[1]}: {texts[0]}" if isinstance(value, dict) else str(texts[0]))
    path.discard(id(value))
    parts = sorted(parts) if isinstance(value, set | frozenset) else parts
    return f"{type(value).__name__}({', '.join(parts)})"
