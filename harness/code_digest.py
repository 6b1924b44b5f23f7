"""A digest of the code of something registered outside memprox (a model factory, a recorder class): the run store
addresses memprox's own by name and version, and a user's by name alone would serve a changed model or recorder the
stored arrays of its predecessor. Its source is hashed, with the source of the functions and classes it names and of
its base classes, of its own module or a user module (`code_digest_user`: not memprox's, the standard library's or an
installed package's), the plain values (numbers, text, tuples of them) and lists and dicts (as written) it reads,
directly or through a user module (`config.SCALE`), in its methods and the comprehensions, lambdas and inner functions
they hold, and the class attributes whose value the source does not show (`WIDTH = BASE * 2`: `_class_values`; a user
class's instance by what it holds, in a tuple too). It reads too the user modules a function imports in its body
(`code_digest_imports`), the code that fills or makes a module list or dict (`code_digest_changes`), and top-level
calls through another module (`torch.manual_seed(1)`). A value that differs from process to process (`RUN_ID =
str(uuid.uuid4())`) makes a digest that does too: `harness.worker_imports` compares this process's digests with a
fresh one's before workers train (`settings_read` names it). The source is the file as it is now
(`harness.code_source`); `worker_imports` refuses a model whose file changed since its import where this process
trains it (`--executor inprocess`)."""

from __future__ import annotations

import ast
import dataclasses
import dis
import enum
import functools
import hashlib
import inspect
import re
from collections.abc import Generator
from typing import Any

from harness.code_digest_globals import global_text
from harness.code_digest_imports import imported
from harness.code_digest_user import (
    _plain,
    code_named,
    container,
    displayed,
    effects,
    followed,
    instance_state,
    module_reads,
    own_dict,
    read_containers,
)
from harness.code_digest_values import _array, _consts, _is_setting, _repr, shown
from harness.code_digest_wrapped import cached as _cached
from harness.code_digest_wrapped import functions as _functions
from harness.code_digest_wrapped import unwrap as _unwrap
from harness.code_digest_wrapped import wrapper_code as _wrapper
from harness.code_source import class_body, nested_codes, source

#: A step of the walk: yields the steps whose text it needs (`_run` runs them and sends their text
#: back) and returns its own text. A stack of generators, not Python's: a factory naming a chain of
#: 500 functions of its module passed the interpreter's recursion limit (RecursionError at import).
Step = Generator[Any, str, str]


def code_digest(obj: Any, length: int = 16) -> str:
    """The first `length` hex digits of the SHA-256 of `obj`'s code (`_code`) and of the calls its modules make
    through another module as they run (`effects`: `torch.set_default_dtype(...)`)."""
    seen: dict[int, Any] = {}
    text = _run(_code(obj, seen, {}))
    modules = [v.__module__ for v in [obj, type(obj), *seen.values()]
               if (inspect.isfunction(v) or inspect.isclass(v)) and isinstance(v.__module__, str)]
    return hashlib.sha256((text + effects(modules)).encode()).hexdigest()[:length]


def settings_read(obj: Any) -> dict[str, str]:
    """The plain module values `obj`'s digest reads, as `module.NAME` -> their hashed text: what to
    name when the digest differs between two processes."""
    read: dict[str, str] = {}
    _run(_code(obj, {}, read))
    return read


def code_read(obj: Any) -> list[Any]:
    """The functions, classes and module lists (`read_containers`) whose source `obj`'s digest reads (methods,
    a wrapper's wrapped function too): the code `--executor inprocess` compares with their files before it trains
    (`code_source.edited_since_import`)."""
    seen: dict[int, Any] = {}
    _run(_code(obj, seen, {}))
    found = [v for v in seen.values() if inspect.isfunction(v) or inspect.isclass(v)]
    found += [f for v in found if inspect.isclass(v) for a in vars(v).values() for f in _functions(a)]
    return found + [_unwrap(f) for f in found if inspect.isfunction(f)] + read_containers(seen)


def _run(step: Step) -> str:
    """The text of `step`, running the steps it asks for depth first, in the order it asks for them."""
    stack: list[Generator[Any, Any, Any]] = [step]  # a step is started with None, then sent text
    text: str | None = None
    while True:
        try:
            stack.append(stack[-1].send(text))  # a step it needs; a new step is started with None
            text = None
        except StopIteration as done:
            stack.pop()
            if not stack:
                return str(done.value)
            text = done.value


def _code(obj: Any, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """Its source (the compiled code where none is found: a notebook's class), with the source of the
    functions and classes of its own or a user module it names (a factory's model class, its blocks)."""
    if id(obj) in seen:
        return ""
    seen[id(obj)] = obj  # held, so its id is no other object's while the walk runs
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return (yield _callable_code(obj, seen, read))
    functions = [obj] if inspect.isfunction(obj) else [f for v in vars(obj).values() for f in _functions(v)]
    try:
        shown: str | None = source(obj)
    except (OSError, TypeError, SyntaxError, ValueError):  # a file that no longer parses, a __wrapped__ loop
        shown = None
    text = shown if shown is not None else repr([(f.__code__.co_code, _consts(f.__code__), f.__code__.co_names)
                                                 for f in functions])
    if inspect.isclass(obj):  # an own or user module's base class's methods run as this class's (`on_batch`)
        for base in obj.__mro__[1:]:
            if followed(base, obj.__module__):
                text += yield _code(base, seen, read)
    if inspect.isfunction(obj) and shown is not None and _unwrap(obj) is not obj:
        text += _wrapper(obj)
    for function in functions:
        if inspect.isclass(obj) and not function.__qualname__.startswith(obj.__qualname__ + ".") and \
                followed(function, obj.__module__):  # `fn = acts.act`, `staticmethod(act)`: its source was unread
            text += f"\n{function.__qualname__} " + (yield _code(function, seen, read))
            continue
        text += yield _globals_code(function, obj.__module__, seen, read)
        text += yield _carried(function, obj.__module__, seen, read)
        text += imported(nested_codes(function.__code__), function.__globals__.get("__package__") or "",
                         function.__module__, seen)  # `def build(): from mypkg import widths`: unread (digest30)
    if inspect.isclass(obj):
        text += yield _class_values(obj, shown, seen, read)
    return text


def _carried(function: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """The values a function carries that its source names but does not show: its default values
    (`width=WIDTH` is evaluated once, at the `def`) and its closure's cells (`make_factory(64)`'s
    `width`; a decorator's wrapper holds the function it wraps there), hashed as a partial's arguments.
    Both were unseen: WIDTH 32 -> 256, `make_factory(128)` or an edit of HIDDEN read by a decorated
    factory kept the digest and served the old model's runs. "" when it carries none (the digest of
    such a function is unchanged); the `__class__` cell of a method calling `super()` is its class."""
    cells = {name: cell for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ())
             if name != "__class__"}
    text = ""
    if function.__defaults__ or function.__kwdefaults__:
        defaults = [[_state_held(v) for v in function.__defaults__ or ()],
                    {k: _state_held(v) for k, v in sorted((function.__kwdefaults__ or {}).items())}]
        text += "\ndefaults " + (yield _argument(defaults, module, seen, read))
    if cells:
        values = {name: _state_held(_cell(cell)) for name, cell in sorted(cells.items())}
        text += "\nclosure " + (yield _argument(values, module, seen, read))
    return text


def _state_held(value: Any) -> Any:
    """A set a default value or closure cell is, as an empty set (its type alone, as before digest30): state a
    run fills (`seen=set()`, reprlib's `repr_running`), which would give a digest after a run another than a
    fresh process's, refused as differing. A set inside a list or dict there is read (`t=[{1, 2}]`)."""
    return set() if type(value) is set else value


def _cell(cell: Any) -> Any:
    """A closure cell's value; one not yet assigned (a name bound after the inner `def`) as its type."""
    try:
        return cell.cell_contents
    except ValueError:
        return cell


def _globals_code(function: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """The own-module functions, classes and plain values `function` reads as globals, in its body or
    in code nested in it (a list comprehension is code of its own before Python 3.12: a factory's
    `[Block(HIDDEN) for _ in range(3)]` hid both). An attribute (`self.scale`) is no global."""
    text = ""
    done: set[str] = set()
    for code in nested_codes(function.__code__):
        loads = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
        for named in code.co_names:
            if named in done or named not in loads or named not in function.__globals__:
                continue
            done.add(named)
            text += yield _global(named, function.__globals__[named], function.__module__, module, seen, read)
        for named, value in module_reads(code, function.__globals__):  # `config.SCALE`, `blocks.Block`
            if named not in done:
                done.add(named)
                text += yield _global(named, value, named.rpartition(".")[0], module, seen, read)
    return text


def _global(named: str, value: Any, of: str, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """A global a function reads (`of.named`): a function or class of its or a user module by its code, a plain
    value by its repr, a list or dict as written (`container`), a user class's instance by its state, a partial
    by its function and arguments, a cached function (`@functools.cache`) by the function it wraps."""
    inner = _cached(value)
    if inner is not None and followed(inner, module):  # its cache wrapper is no function: its code was unread
        value = inner
    if isinstance(value, functools.partial):  # `B = partial(Block, width=W)`: hashed as nothing, W 8 -> 16 kept it
        return (yield _code(value, seen, read))
    if (inspect.isfunction(value) or inspect.isclass(value)) and followed(value, module):
        return (yield _code(value, seen, read))
    if isinstance(value, list | dict | set | frozenset | tuple) and not _is_setting(value):  # `LAYERS = [64, 32]`
        text = container(named, value, of, read, seen)  # -> [128, 64] kept the digest
        if displayed(of, named.rpartition(".")[2]) and _plain(value, set()) is None:  # `ACTS = {"relu": my_act}`:
            read[f"{of}.{named.rpartition('.')[2]}"] = held = yield _attribute(value, module, seen, read)
            text += "\nholding " + held  # my_act's edit kept the digest; named where a fresh process differs
        for code in code_named(of, named.rpartition(".")[2]):  # `W = make_widths()`: its edit kept the digest
            text += "\nmade by " + (yield _code(code, seen, read))
        return text
    if _is_setting(value):  # `HIDDEN = 256` widened the model but served the 32-wide one's runs
        read[f"{of}.{named.rpartition('.')[2]}"] = _repr(value)
        return f"\n{named} = {_repr(value)}"
    if followed(type(value), module):  # `CFG = Config(64)`, `config.CFG`: named where a fresh process differs
        read[f"{of}.{named.rpartition('.')[2]}"] = part = yield _argument(value, module, seen, read)
        return f"\n{named} = {part}"
    part = global_text(of, named.rpartition(".")[2], value, seen)  # by its text where made by code alone, else value
    if part:  # `MEAN = np.array(...)`, `ACT = nn.LeakyReLU(0.1)` were hashed as nothing
        read[f"{of}.{named.rpartition('.')[2]}"] = part
        return f"\n{named} = {part}"
    return ""


def _class_values(cls: type, shown: str | None, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """The class attributes its body sets to a value its source does not show: one set from a module
    value (`WIDTH = BASE * 2`, `WIDTH = consts.BASE`), an enum member's value, a partial, a nested class
    and its reads, an array's bytes; every public one where no source is found (a notebook's class).
    A plain literal (`WIDTH = 64`) is left out while the value is still the one written there, and so
    are attributes the body does not set (`_fields`, `_is_protocol`: typing's), so a class whose body
    sets literals only keeps its digest. Before, `BASE = 32` -> 64 under `WIDTH = BASE * 2` kept the
    digest and served the 32-wide model's runs. A public attribute set outside the body (by a class
    decorator, `Net.width = W` after it) is hashed too: it was not seen (digestattack28)."""
    body = _body(cls.__name__, shown) if shown is not None else None
    bound, literals = body if body is not None else (set(), {})
    bound = bound | {n for n, v in vars(cls).items() if not n.startswith("_") and not hasattr(type(v), "__get__")}
    text = ""
    for name, value in vars(cls).items():
        if name not in bound or name.endswith("__") or _functions(value) or isinstance(value, property):
            continue  # `__module__`, `__doc__`; methods and properties are read as code (`_functions`)
        if name in literals and _same(literals[name], value):
            continue
        part = yield _attribute(value, cls.__module__, seen, read)
        if re.sub(r"<[\w.]+>|[\[\]{}(),: ]", "", part):  # not only types (`(EVAL_LAST,)`): the source names them
            read[f"{cls.__module__}.{cls.__qualname__}.{name}"] = part  # named where a fresh process differs
            text += f"\n{cls.__qualname__}.{name} = {part}"
    return text


def _body(name: str, shown: str) -> tuple[set[str], dict[str, Any]] | None:
    """The names the class body `shown` binds (its code's STORE_NAMEs) and its top-level `NAME = literal`
    assignments (the last of a name) as values; None when it does not compile (`code_source.class_body`)."""
    body = class_body(name, shown)
    if body is None:
        return None
    tree, code = body
    bound = {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_NAME"}
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    literals: dict[str, Any] = {}
    for node in classes[0].body if classes else []:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            try:
                literal = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            literals.update({t.id: literal for t in targets if isinstance(t, ast.Name)})
    return bound, literals


def _same(literal: Any, value: Any) -> bool:
    """Whether a class attribute still holds the literal its source assigns (not one set after), an
    enum member the value written for it (`RELU = 1`). Compared as `_plain` text (a set's sorted): a set's
    repr follows its table's history and the string hash seed, and `S = {"x", "y", 3}` was hashed or not
    by chance, another digest in a fresh process, refused (attdig30)."""
    value = value.value if isinstance(value, enum.Enum) else value
    try:
        return type(literal) is type(value) and _plain(literal, set()) == _plain(value, set()) and \
            bool(literal == value)
    except Exception:  # an odd __eq__ or __repr__: hash the value
        return False


def _attribute(value: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """A class attribute's value as text: as a partial's argument (`_argument`), a partial by its code,
    a set in sorted order (a set of text iterates in the order of the process's string hash seed), a C
    function (`torch.relu`) by its name, an array by its bytes; "" for an instance of another class."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, enum.Enum):
        return f"enum {(yield _argument(value.value, module, seen, read))}"
    if isinstance(value, functools.partial):
        return (yield _code(value, seen, read))
    if isinstance(value, set | frozenset):
        return "{" + ", ".join((yield from _members(value, module, seen, read))) + "}"
    if _is_setting(value) or isinstance(value, list | tuple | dict) or inspect.isfunction(value) or \
            inspect.isclass(value):
        return (yield _argument(value, module, seen, read))
    if inspect.isbuiltin(value):
        return f"{getattr(value, '__module__', None)}.{getattr(value, '__qualname__', None)}"
    return _array(value) or (yield _instance(value, module, seen, read))


def _instance(value: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """Another value by what makes it: a torch dtype or device, a compiled pattern, a path or a typing
    generic by its repr (the same in every process), a dataclass instance by its class and fields, a
    user class's by its code and what it holds (`_state`), any other by its class; a descriptor by
    its type, left out. Each was hashed as nothing: `dtype = DTYPE` or `act = ACT()` kept its digest
    when DTYPE or ACT changed."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    text = shown(value)
    if text:
        return text
    if hasattr(type(value), "__get__"):
        return f"<{kind}>"
    cls = yield _argument(type(value), module, seen, read)  # its code when of this or a user module, else its name
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return f"{cls}{(yield _argument(fields, module, seen, read))}"
    state = (yield _state(value, module, seen, read)) if followed(type(value), module) else ""
    return f"instance of {cls}" + (f" {state}" if state else "")


def _state(value: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """A user class's instance by what it holds (`instance_state`; it was its class alone), "" for nothing."""
    if id(value) in seen:  # an instance holding itself, on the path from the outer one
        return "<cycle>"
    seen[id(value)] = value
    state = instance_state(value)
    text = (yield _argument(state, type(value).__module__, seen, read)) if state else ""
    seen.pop(id(value), None)
    return text


def _callable_code(obj: Any, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """A factory that is no function: `functools.partial(make, width=256)` by its function and
    arguments, an instance of a class with `__call__` by its class and plain attributes. Both were
    hashed as nothing at all, so `width=32` and `width=256` shared one digest and one model's runs."""
    if inspect.ismethod(obj):  # `Net.build` (a classmethod) or `maker.make`: every bound method had one digest
        function = yield _code(obj.__func__, seen, read)
        return f"method({function}, of {(yield _code(obj.__self__, seen, read))})"
    if isinstance(obj, functools.partial):
        module = getattr(obj.func, "__module__", "")
        function = yield _code(obj.func, seen, read)
        args = yield _argument(obj.args, module, seen, read)
        keywords = yield _argument(dict(sorted(obj.keywords.items())), module, seen, read)
        return f"partial({function}, {args}, {keywords})"
    attributes = dict(sorted((own_dict(obj) or {}).items()))
    cls = yield _code(type(obj), seen, read)
    return f"{cls}\n{(yield _argument(attributes, type(obj).__module__, seen, read))}"


def _argument(value: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Step:
    """A partial's argument or an instance's attribute: plain values and lists or dicts of them by
    content, functions and classes by their code (by their name when not of `module` or a user module:
    torch's `nn.ReLU`), a user class's instance by its code and state, anything else by its type alone."""
    if isinstance(value, list | tuple | dict):
        if id(value) in seen:  # a list holding itself, on the path from the outer one: it hung the digest
            return "<cycle>"
        seen[id(value)] = value
        parts = []
        for k, v in value.items() if isinstance(value, dict) else enumerate(value):
            key = (yield _argument(k, module, seen, read)) + ": " if isinstance(value, dict) else ""
            parts.append(key + (yield _argument(v, module, seen, read)))
        seen.pop(id(value), None)
        return "{" + ", ".join(parts) + "}" if isinstance(value, dict) else "[" + ", ".join(parts) + "]"
    if _is_setting(value):
        return _repr(value)
    if inspect.isfunction(value) or inspect.isclass(value):
        own = followed(value, module)
        return (yield _code(value, seen, read)) if own else f"{value.__module__}.{value.__qualname__}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, functools.partial):  # `block=partial(Block, width=W)`, one in a list: its type alone
        parts = []  # (W 8 -> 16 kept the digest); an installed package's function by its name, as above
        for part in (value.func, list(value.args), dict(sorted(value.keywords.items()))):
            parts.append((yield _argument(part, module, seen, read)))
        return f"partial({', '.join(parts)})"
    if isinstance(value, enum.Enum):  # `Act.RELU` and `Act.TANH` were one argument
        return f"<{kind}.{value.name}> {(yield _argument(value.value, module, seen, read))}"
    if followed(type(value), module) and not hasattr(type(value), "__get__"):  # `(Block(3),)`, `cfg=Config()`
        cls = yield _code(type(value), seen, read)
        return f"<{kind}> {cls}{(yield _state(value, module, seen, read))}"
    if isinstance(value, set | frozenset) and value:  # `[{1, 2}]` in a class attribute, a partial's or instance's
        parts = yield from _members(value, module, seen, read)  # list: its type alone, {1, 2} -> {1, 5} kept it
        return f"<{kind}> {{{', '.join(parts)}}}"
    return shown(value) or f"<{kind}>"  # an array, a path an instance or a list holds: its type alone (digest30)


def _members(value: Any, module: str, seen: dict[int, Any], read: dict[str, str]) -> Generator[Any, str, list[str]]:
    """A set's members as text, sorted, each read in the order of the text the walk so far gives it alone: read in
    the set's order (ids: another in every process), a member that a former one's code read (`{Block, Big}`, Big a
    Block) was "" or not by chance, and a fresh process's digest differed, refused as such (attdig30)."""
    if all(_is_setting(v) and not isinstance(v, tuple) for v in value):  # plain: each its repr (`_argument`'s)
        return sorted(_repr(v) for v in value)
    alone = []
    for v in value:
        alone.append(((yield _argument(v, module, dict(seen), {})), v))
    parts = []
    for _, v in sorted(alone, key=lambda item: item[0]):
        parts.append((yield _argument(v, module, seen, read)))
    return sorted(parts)
