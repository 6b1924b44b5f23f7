"""The user modules a function imports in its body (`def build(): from mypkg import widths`), for the code digest
(`harness.code_digest`): each read as its file's syntax tree (comments and layout aside), with the user modules
it imports in turn. Before, a module imported inside a function was not read at all: `widths.W = 8` -> 16 kept
the digest and served the 8-wide model's runs (digest30). Read from the file, not the imported module: such a
module is imported when the function first runs, so one process has it and a fresh one does not, and its
values would give two digests of one code. Never imported here, and only the user's files are read (not
memprox's, the standard library's or an installed package's: `code_digest_user.user_module`'s rule). A module
imported by a call with its name written (`importlib.import_module("mypkg.widths")`, `__import__`) is read the
same way, in a function's code and in such a module's text (`called_imports`, `_call_import`: digest31)."""

from __future__ import annotations

import ast
import dis
import hashlib
import importlib.util
import linecache
import os
import sys
from types import CodeType
from typing import Any

from harness.code_digest_user import OWN, ContainerRead, _installed, callee

_IMPORT = dis.opmap["IMPORT_NAME"]
#: What loads an import's level and names: Python 3.14 loads the level with LOAD_SMALL_INT, and an import
#: read as LOAD_CONST alone was unread there (its module's edit kept the digest).
_LOADS = ("LOAD_CONST", "LOAD_SMALL_INT")
#: The functions that import a module named by their first argument (`called_imports`).
_CALLED = frozenset({"import_module", "__import__"})

#: file -> (the `linecache` lines parsed, a SHA-256 of its syntax tree, the modules it imports as
#: (name, level, names) with level and names as `from . import x` gives them): one parse per file and process,
#: again once the file is edited. `PARSES` counts them (the tests check the digest adds no more).
_PARSED: dict[str, tuple[list[str], str, list[tuple[str, int, tuple[str, ...]]]]] = {}
PARSES = [0]
#: file -> (its module's `__spec__` when first hashed, that hash): what `ModuleRead.edited` compares with.
_FIRST: dict[str, tuple[Any, str]] = {}


class ModuleRead(ContainerRead):
    """A user module a function imports in its body, for `code_source.edited_since_import`."""

    def __init__(self, module: str, file: str) -> None:
        super().__init__(module, module)
        self.file = file

    def edited(self) -> bool:
        """Whether the module, imported in this process, has a file whose syntax tree is not the one first
        hashed since it was (re)loaded: the function would import the old module, under the edited text's key."""
        module = sys.modules.get(self.__module__)
        first = _FIRST.get(self.file)
        if module is None or first is None or first[0] is not getattr(module, "__spec__", None):
            return False
        return _parsed(self.file)[1] != first[1]


def imported(codes: list[CodeType], package: str, own: str, seen: dict[int, Any]) -> str:
    """The text of the user modules `codes` (a function's code and the code nested in it) import, of package
    `package` (relative imports), but `own` (the function's module, read as values); each module once per walk
    (`seen`), the modules they import in turn after them. "" where they import none (the digest as before)."""
    todo: list[tuple[str, int, tuple[str, ...], str]] = []
    for code in codes:
        todo += [(name, level, (), of or package) for name, level, of in called_imports(code)]
        if _IMPORT not in code.co_code[::2]:
            continue
        consts: list[Any] = []
        for instruction in dis.get_instructions(code):
            if instruction.opname == "IMPORT_NAME" and len(consts) >= 2 and isinstance(consts[-2], int):
                todo.append((instruction.argval, consts[-2], tuple(consts[-1] or ()), package))
            consts = consts + [instruction.argval] if instruction.opname in _LOADS else []
    done = {v.__module__ for v in seen.values() if isinstance(v, ModuleRead)} | {own}
    text = ""
    while todo:
        name, level, names, of = todo.pop(0)
        for module in _modules(name, level, names, of):
            file = _file(module) if module not in done else None
            if file is None:
                continue
            done.add(module)
            _, digest, imports = _parsed(file)
            marker = ModuleRead(module, file)
            seen[id(marker)] = marker
            spec = getattr(sys.modules.get(module), "__spec__", None)
            if spec is not None and (file not in _FIRST or _FIRST[file][0] is not spec):
                _FIRST[file] = (spec, digest)
            text += f"\nimports {module} {digest}"
            inner = module if os.path.basename(file) == "__init__.py" else module.rpartition(".")[0]
            todo += [(n, lv, ns, inner) for n, lv, ns in imports]
    return text


def called_imports(code: CodeType) -> list[tuple[str, int, str]]:
    """The modules `code` imports by a call with its name written in it: `importlib.import_module("mypkg.layers")`,
    `import_module(".layers", package=__package__)`, `__import__("mypkg.layers")`, as (name, level, the package a
    second written argument names, else ""). Unread before digest31: an edit of such a module kept the digest. A
    name made as the code runs (`import_module(f"mypkg.{kind}")`) is not seen."""
    if not _CALLED & {*code.co_names, *code.co_varnames, *code.co_freevars, *code.co_cellvars}:
        return []
    found: list[tuple[str, int, str]] = []
    args: list[str] | None = None  # the written arguments after a load of `import_module`, as they come
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("PUSH_NULL", "NOP", "CACHE", "PRECALL"):
            continue
        if args is not None and instruction.opname == "LOAD_CONST" and isinstance(instruction.argval, str) and \
                len(args) < 2:
            args.append(instruction.argval)
            continue
        if args:
            level = len(args[0]) - len(args[0].lstrip("."))
            found.append((args[0][level:], level, args[1] if len(args) > 1 else ""))
        loads = instruction.opname.startswith("LOAD_") and instruction.argval in _CALLED
        args = [] if loads else None
    return found


def _modules(name: str, level: int, names: tuple[str, ...], package: str) -> list[str]:
    """The modules `from {'.' * level}{name} import {names}` (or `import name`) may run, outermost first."""
    try:
        base = importlib.util.resolve_name("." * level + name, package) if level else name
    except (ImportError, ValueError):
        return []
    parts = base.split(".")
    found = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if base else []
    return found + [f"{base}.{n}" for n in names if n != "*" and base]


def _file(module: str) -> str | None:
    """The source file of module `module` where it is the user's (not memprox's, the standard library's or an
    installed package's), found as the import system would find it, without importing it or its package. Not
    `__main__`: the script this process runs, and none or another in a fresh one (its digest differed: refused)."""
    top = module.partition(".")[0]
    if top in (*OWN, "__main__") or top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return None
    held = sys.modules.get(module)
    file = getattr(held, "__file__", None) if held is not None else getattr(_spec(module), "origin", None)
    if not isinstance(file, str) or not file.endswith(".py") or _installed(file):
        return None
    return file


def _spec(module: str) -> Any:
    """`module`'s spec from the finders of `sys.meta_path`, its package's path from its own spec where the
    package is not imported (`importlib.util.find_spec` imports the package); None where none finds it."""
    parent = module.rpartition(".")[0]
    path = None
    if parent:
        held = sys.modules.get(parent)
        path = getattr(held, "__path__", None) if held is not None else \
            getattr(_spec(parent), "submodule_search_locations", None)
        if path is None:
            return None
    for finder in sys.meta_path:
        try:
            spec = finder.find_spec(module, path) if hasattr(finder, "find_spec") else None
        except Exception:  # a finder that fails for a name it does not know
            continue
        if spec is not None:
            return spec
    return None


def _parsed(file: str) -> tuple[list[str], str, list[tuple[str, int, tuple[str, ...]]]]:
    """`file`'s lines, a SHA-256 of its syntax tree and the imports it holds (`_PARSED`)."""
    linecache.checkcache(file)
    lines = linecache.getlines(file)
    cached = _PARSED.get(file)
    if cached is not None and cached[0] is lines:
        return cached
    PARSES[0] += 1
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        cached = _PARSED[file] = (lines, hashlib.sha256("".join(lines).encode()).hexdigest()[:16], [])
        return cached
    imports: list[tuple[str, int, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(alias.name, 0, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.module or "", node.level, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Call):  # `importlib.import_module("mypkg.layers")` (digest31)
            imports += _call_import(node)
    digest = hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]
    cached = _PARSED[file] = (lines, digest, imports)
    return cached


def _call_import(node: ast.Call) -> list[tuple[str, int, tuple[str, ...]]]:
    """The module a call `import_module("name")`, `import_module(".name", "pkg")` or `__import__("name")` with its
    name written imports, as `_parsed` keeps imports (a package written in the call resolved); [] for another call."""
    called = callee(node)
    args = [a.value if isinstance(a, ast.Constant) else None for a in node.args[:2]]
    args += [k.value.value for k in node.keywords if k.arg == "package" and isinstance(k.value, ast.Constant)]
    if called not in _CALLED or not args or not isinstance(args[0], str):
        return []
    name, package = args[0], args[1] if len(args) > 1 and called == "import_module" else None
    if name.startswith(".") and isinstance(package, str):
        try:
            return [(importlib.util.resolve_name(name, package), 0, ())]
        except (ImportError, ValueError):
            return []
    level = len(name) - len(name.lstrip("."))
    return [(name[level:], level, ())]
