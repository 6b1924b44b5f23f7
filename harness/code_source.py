"""`inspect.getsource` for the code digest (`harness.code_digest`), with a class found by one parse of
its module's text, not one per class: `inspect.findsource` parses the whole module with `ast` for every
class it is asked about, so digesting a user module of many classes parsed it once per class. The text
returned is the same as `inspect.getsource`'s (the digests of memprox's own models and recorders and of
every class of memprox's modules were compared before and after, all equal), and so are its errors, but
for the second of two classes of one name: `inspect` gives the first's text, this the second's (`_which`)."""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
import textwrap
import weakref
from collections.abc import Iterable
from types import CodeType
from typing import Any

from harness.code_digest_user import ContainerRead, _plain
from harness.code_digest_wrapped import functions as _functions
from harness.code_digest_wrapped import unwrap as _unwrap

_MISSING = object()

#: file -> (the `linecache` lines parsed, class qualname -> (index of its first line, decorators included,
#: its last line's number) of each class of that name, in order). Valid while linecache hands out the same
#: list: an edited file (its mtime or size changed) gets a new list from `linecache.checkcache`, and so a new parse.
_CLASS_LINES: dict[str, tuple[list[str], dict[str, list[tuple[int, int]]]]] = {}

#: class -> the signature of its body when this process first read its source: what
#: `edited_since_import` compares a class with (its body's code is not kept once the class is made).
_FIRST_BODY: weakref.WeakKeyDictionary[type, Any] = weakref.WeakKeyDictionary()


def source(obj: Any) -> str:
    """`inspect.getsource(obj)`; a class's start line taken from its module's table (`_class_lines`)."""
    if not inspect.isclass(inspect.unwrap(obj)):
        return inspect.getsource(obj)
    obj = inspect.unwrap(obj)
    file, lines = _lines(obj)
    cached = _CLASS_LINES.get(file)
    if cached is None or cached[0] is not lines:
        cached = _CLASS_LINES[file] = (lines, _class_lines("".join(lines)))
    found = cached[1].get(obj.__qualname__)
    if not found:
        raise OSError("could not find class definition")
    text = "".join(inspect.getblock(lines[_which(obj, file, lines, found):]))
    try:
        if obj not in _FIRST_BODY:
            _FIRST_BODY[obj] = _body_signature(obj.__name__, text)
    except TypeError:  # a metaclass that makes its classes unhashable: not compared
        pass
    return text


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


def _which(cls: type, file: str, lines: list[str], found: list[tuple[int, int]]) -> int:
    """The first line's index of the one of `found` (the classes of `cls`'s qualname in `file`) that made
    `cls`: the one holding the first line of a method `cls` defines, else the first whose top-level literal
    assignments `cls` still holds, else the first (`inspect.getsource`'s, which read the first of two classes
    of one name: the second's edit kept its digest, digest30). One class of that name: it, as before."""
    if len(found) == 1:
        return found[0][0]
    for value in vars(cls).values():
        for function in _functions(value):
            code = getattr(_unwrap(function), "__code__", None)  # `functools.wraps(len)`: a builtin, no code
            if code is not None and code.co_filename == file and \
                    function.__qualname__.startswith(cls.__qualname__ + "."):
                match = [start for start, end in found if start < code.co_firstlineno <= end]
                if match:
                    return match[-1]
    for start, end in found:
        try:
            tree = ast.parse(textwrap.dedent("".join(lines[start:end])))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        node = tree.body[0] if tree.body else None
        if isinstance(node, ast.ClassDef) and all(_holds(cls, statement) for statement in node.body):
            return start
    return found[0][0]


def _holds(cls: type, statement: ast.stmt) -> bool:
    """Whether `cls` holds the value a literal assignment of its body gives (any other statement: True)."""
    if not isinstance(statement, ast.Assign | ast.AnnAssign) or statement.value is None:
        return True
    try:
        literal = ast.literal_eval(statement.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return True
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return all(type(v := vars(cls).get(t.id, _MISSING)) is type(literal) and _plain(v, set()) == _plain(literal, set())
               for t in targets if isinstance(t, ast.Name))  # a set by sorted text: its repr follows the hash seed


def _class_lines(text: str) -> dict[str, list[tuple[int, int]]]:
    """Each class's qualname -> the index of its first line (its first decorator's) and its last line's
    number, of each class of that name in the order written (`_which` picks one); a walk of the statements
    alone, with a stack of its own (no expression holds a class, and a deep one hit the recursion limit)."""
    found: dict[str, list[tuple[int, int]]] = {}
    stack: list[tuple[ast.AST, tuple[str, ...]]] = [(ast.parse(text), ())]
    while stack:
        node, names = stack.pop()
        if isinstance(node, ast.ClassDef):
            names = (*names, node.name)
            start = (node.decorator_list[0] if node.decorator_list else node).lineno - 1
            found.setdefault(".".join(names), []).append((start, node.end_lineno or start + 1))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = (*names, node.name, "<locals>")
        children = [c for c in ast.iter_child_nodes(node)
                    if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case)]
        stack.extend((child, names) for child in reversed(children))
    return found


def edited_since_import(objects: Iterable[Any]) -> list[str]:
    """The qualnames of `objects` (the functions and classes a digest reads: `code_digest.code_read`)
    whose code in this process is not what the file the digest reads them from says now (edited since
    import, not reloaded); "<the file>" for a file that no longer compiles. A function is compared by
    its compiled code (line numbers aside: a comment is no edit), a class by its body as first read in
    this process (`source`), which catches a value the digest does not see (`act = nn.ReLU()` -> `GELU()`)
    once the class was digested before the edit. Code without a file (a notebook's, `exec`'s) is its
    own source. The digest reads the file as it is now, so under `--executor inprocess` the edited
    model's digest addressed the runs of the imported, old one: a fresh process then built the new model
    and was served them. Before, every function of the factory's module was compared and nothing else: a
    helper the model never calls refused it, a decorated factory's or a class body's edit passed."""
    files: dict[str, dict[str, set[Any]] | None] = {}
    edited: set[str] = set()
    for obj in objects:
        try:
            if inspect.isclass(obj):
                try:
                    first = _FIRST_BODY.get(obj)
                except TypeError:  # a metaclass that makes its classes unhashable: not kept, not compared (`source`)
                    first = None
                if first is not None and _body_signature(obj.__name__, source(obj)) != first:
                    edited.add(obj.__qualname__)
            elif isinstance(obj, ContainerRead):  # `LAYERS = [...]` of a module (`code_digest_user.container`)
                if obj.edited():
                    edited.add(obj.__qualname__)
            elif inspect.isfunction(obj):
                code, name = obj.__code__, getattr(obj.__code__, "co_qualname", obj.__code__.co_name)
                now = _compiled(code.co_filename, obj.__globals__, files)
                if now is not None and _signature(code) not in now.get(name, set()):
                    edited.add(obj.__qualname__)
        except OSError:  # gone: the digest falls back to the loaded code itself
            continue
        except (SyntaxError, ValueError):
            edited.add("<the file>")
    return sorted(edited)


def _compiled(file: str, module_globals: dict[str, Any], files: dict[str, dict[str, set[Any]] | None]
              ) -> dict[str, set[Any]] | None:
    """The signatures of the code `file` compiles to now, by qualname, from the lines `inspect` reads
    (`linecache`: a zip's source too); None without lines. Compiled once per file (`files`)."""
    if file not in files:
        linecache.checkcache(file)
        lines = linecache.getlines(file, module_globals)
        files[file] = None
        compiled = _compile("".join(lines), file, module_globals) if lines else None
        if compiled is not None:
            found: dict[str, set[Any]] = {}
            for code in nested_codes(compiled):
                found.setdefault(getattr(code, "co_qualname", code.co_name), set()).add(_signature(code))
            files[file] = found
    return files[file]


def _compile(text: str, file: str, module_globals: dict[str, Any]) -> CodeType | None:
    """`text` compiled as its module's loader compiled it: a module pytest imported (a test file, a
    conftest) has its asserts rewritten, and a model there with an `assert` was refused as edited while
    unchanged; None where that rewrite cannot be repeated (not compared)."""
    if "@pytest_ar" not in module_globals:
        return compile(text, file, "exec", dont_inherit=True)
    try:
        from _pytest.assertion.rewrite import rewrite_asserts

        tree = ast.parse(text, file)
        rewrite_asserts(tree, text.encode(), file)
        return compile(tree, file, "exec", dont_inherit=True)
    except (ImportError, TypeError, AttributeError):  # another pytest: its rewrite's signature differs
        return None


@functools.lru_cache(maxsize=1024)
def class_body(name: str, text: str) -> tuple[ast.Module, CodeType] | None:
    """The syntax tree of class `name`'s source `text` and the code of its body (its methods' code
    nested in it); None where that text does not compile alone (a nested class's `nonlocal`). An
    indented source (a nested class) goes under an `if`, not dedented: that would change the text of
    its strings. The one compile of a class's text, for the digest's reads (`code_digest._body`) and
    for the edited-since-import check (`_body_signature`); once per text and process (cached: the
    planner digests the model once per run, and each digest parsed each class's text again). Its
    tree is shared: read it, never change it."""
    wrapped = f"if True:\n{text}" if text[:1].isspace() else text
    try:
        tree = ast.parse(wrapped)
        module = compile(tree, "<class>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    code = next((c for c in nested_codes(module) if c.co_name == name and c is not module), None)
    return None if code is None else (tree, code)


def _body_signature(name: str, text: str) -> Any:
    """The signature of the body of class `name` whose source is `text` (its methods' code included);
    None where that text does not compile alone."""
    body = class_body(name, text)
    return None if body is None else _signature(body[1])


def nested_codes(code: CodeType) -> list[CodeType]:
    """`code` and every code object nested in it (comprehensions, lambdas, inner functions, a class's
    methods), outer first, each followed by its own in the order they are written; a stack of its
    own, not Python's."""
    found, todo = [], [code]
    while todo:
        found.append(todo.pop())
        todo += reversed([c for c in found[-1].co_consts if isinstance(c, CodeType)])
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
