"""`inspect.getsource` for the code digest (`harness.code_digest`), with a class found by one parse of
its module's text, not one per class: `inspect.findsource` parses the whole module with `ast` for every
class it is asked about, so digesting a user module of many classes parsed it once per class. The text
returned is the same as `inspect.getsource`'s (the digests of memprox's own models and recorders and of
every class of memprox's modules were compared before and after, all equal), and so are its errors."""

from __future__ import annotations

import ast
import inspect
import linecache
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
