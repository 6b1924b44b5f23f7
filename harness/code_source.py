"""`inspect.getsource` for the code digest (`harness.code_digest`), with a class found by one parse of
its module's text, not one per class: `inspect.findsource` parses the whole module with `ast` for every
class it is asked about, so digesting a user module of many classes parsed it once per class. The text
returned is the same as `inspect.getsource`'s (the digests of memprox's own models and recorders and of
every class of memprox's modules were compared before and after, all equal), and so are its errors."""

from __future__ import annotations

import ast
import inspect
import linecache
import sys
import tokenize
from types import CodeType
from typing import Any

#: file -> (the `linecache` lines parsed, class qualname -> index of its first line, decorators
#: included). Valid while linecache hands out the same list: an edited file (its mtime or size
#: changed) gets a new list from `linecache.checkcache`, and so a new parse.
_CLASS_LINES: dict[str, tuple[list[str], dict[str, int]]] = {}


def source(obj: Any) -> str:
    """`inspect.getsource(obj)`; a class's start line taken from its module's table (`_class_lines`)."""
    if not inspect.isclass(inspect.unwrap(obj)):
        return inspect.getsource(obj)
    obj = inspect.unwrap(obj)
    file, lines = _lines(obj)
    cached = _CLASS_LINES.get(file)
    if cached is None or cached[0] is not lines:
        cached = _CLASS_LINES[file] = (lines, _class_lines("".join(lines)))
    start = cached[1].get(obj.__qualname__)
    if start is None:
        raise OSError("could not find class definition")
    return "".join(inspect.getblock(lines[start:]))


def _lines(obj: type) -> tuple[str, list[str]]:
    """The lines of `obj`'s file as `inspect.findsource` reads them (same checks, same errors)."""
    file = inspect.getsourcefile(obj)
    if file:
        linecache.checkcache(file)
    else:
        file = inspect.getfile(obj)
        if not (file.startswith("<") and file.endswith(">")):
            raise OSError("source code not available")
    module = inspect.getmodule(obj, file)
    lines = linecache.getlines(file, module.__dict__) if module else linecache.getlines(file)
    if not lines:
        raise OSError("could not get source code")
    return file, lines


def _class_lines(text: str) -> dict[str, int]:
    """Each class's qualname -> the index of its first line (its first decorator's), the first
    definition of a name winning, as `inspect`'s class finder finds it; a walk of the statements
    alone, with a stack of its own (no expression holds a class, and a deep one hit the recursion limit)."""
    found: dict[str, int] = {}
    stack: list[tuple[ast.AST, tuple[str, ...]]] = [(ast.parse(text), ())]
    while stack:
        node, names = stack.pop()
        if isinstance(node, ast.ClassDef):
            names = (*names, node.name)
            found.setdefault(".".join(names), (node.decorator_list[0] if node.decorator_list else node).lineno - 1)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = (*names, node.name, "<locals>")
        children = [c for c in ast.iter_child_nodes(node)
                    if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case)]
        stack.extend((child, names) for child in reversed(children))
    return found


def edited_since_import(module_name: str) -> list[str]:
    """The functions of module `module_name` whose code in this process is not the code its file
    compiles to now (the file edited since it was imported, not reloaded), by qualname; a file that
    no longer compiles as "<the file>"; [] for a module without a `.py` file (a notebook's). The digest
    reads the file as it is now, so under `--executor inprocess` the edited model's digest addressed the
    runs of the imported, old one: a fresh process then built the new model and was served them."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if module is None or not isinstance(file, str) or not file.endswith(".py"):
        return []
    try:
        with tokenize.open(file) as f:
            compiled = compile(f.read(), file, "exec", dont_inherit=True)
    except OSError:  # gone: the digest falls back to the loaded code itself
        return []
    except (SyntaxError, ValueError):
        return ["<the file>"]
    now: dict[str, set[Any]] = {}
    for code in _codes(compiled):
        now.setdefault(getattr(code, "co_qualname", code.co_name), set()).add(_signature(code))
    edited = []
    for function in _loaded_functions(module, file):
        code = function.__code__
        if _signature(code) not in now.get(getattr(code, "co_qualname", code.co_name), set()):
            edited.append(function.__qualname__)
    return sorted(set(edited))


def _loaded_functions(module: Any, file: str) -> list[Any]:
    """The functions of `module` compiled from `file`, at its top level and in its classes (nested ones too)."""
    found, seen, todo = [], set(), list(vars(module).values())
    while todo:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, staticmethod | classmethod):
            todo.append(value.__func__)
        elif isinstance(value, property):
            todo += [value.fget, value.fset, value.fdel]
        elif inspect.isfunction(value) and value.__code__.co_filename == file:
            found.append(value)
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            todo += list(vars(value).values())
    return found


def _codes(code: CodeType) -> list[CodeType]:
    """`code` and every code object nested in it."""
    found, todo = [], [code]
    while todo:
        found.append(todo.pop())
        todo += [c for c in found[-1].co_consts if isinstance(c, CodeType)]
    return found


def _signature(code: CodeType) -> Any:
    """What a code object does, without its line numbers: its bytecode, names and constants."""
    return code.co_code, code.co_names, code.co_varnames, code.co_freevars, tuple(map(_constant, code.co_consts))


def _constant(c: Any) -> Any:
    """A constant comparable as written: with its type (`1` is not `True`), a float by its repr
    (`-0.0` is not `0.0`, a nan equals a nan), nested code by its signature, a frozenset sorted."""
    if isinstance(c, CodeType):
        return _signature(c)
    if isinstance(c, tuple | frozenset):
        parts = tuple(map(_constant, c))
        return type(c).__name__, tuple(sorted(parts, key=repr)) if isinstance(c, frozenset) else parts
    return type(c).__name__, repr(c) if isinstance(c, float | complex) else c
