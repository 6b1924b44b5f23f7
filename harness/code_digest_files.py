"""The data files a user module reads at import into a module value, for the code digest (`harness.code_digest`):
`CFG = json.load(open("cfg.json"))`, `with open(HERE / "cfg.yaml") as f: CFG = yaml.safe_load(f)`, `W =
np.load("w.npy")`. Before digest31 the digest read the statement's text alone, so an edit of the file kept the
digest and served the old model's stored runs as the edited one's. A file is read by its content (a `.json` or
`.yaml` file by what it parses to, so its layout and comments are no edit), never by where it lies: the same
content found from another working directory, or a file touched with the same bytes, keeps the digest."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import linecache
import os
import re
import sys
from pathlib import PurePath
from typing import Any

from harness.code_digest_changes import module_tree
from harness.code_digest_user import ContainerRead, callee, user_module
from harness.code_source import nested_codes
from harness.io import file_sha256

#: file -> (the `linecache` lines parsed, name -> each top-level statement binding it that calls something:
#: (the text constants it holds, the names it reads)): one parse per file and process, again once it is edited.
_STATEMENTS: dict[str, tuple[list[str], dict[str, list[tuple[tuple[str, ...], frozenset[str]]]]]] = {}
#: The modes `open` writes a file in (`_in_functions` leaves out a function holding one).
_MODES = frozenset({"w", "wb", "wt", "w+", "a", "ab", "at", "a+", "x", "xb", "r+", "rb+", "r+b"})
_MODES_MORE = frozenset({"wb+", "w+b", "ab+", "a+b", "xt", "x+", "wt+", "at+", "a+t", "w+t"})
#: The functions that write a file named by their first argument (`_written`); `open` by its mode (`_writes`).
_WRITERS = re.compile(r"(write_text|write_bytes|.*FileHandler|save|savez.*|savetxt|to_(csv|json|parquet|pickle)|"
                      r"touch|basicConfig)$")
#: file -> (its syntax tree, the texts and names it writes files by: `_written`).
_WRITTEN: dict[str, tuple[Any, frozenset[str]]] = {}
#: The folders of files the system makes as they are read (`/proc/cpuinfo`: its MHz differ at each read): no data
#: file; read by bytes, a fresh worker's digest differed and the model was refused (attdig31).
_LIVE = ("/proc/", "/sys/", "/dev/")
#: (real path, mtime, size, inode) -> the content's digest: a file is read once per process until it changes.
_CONTENT: dict[tuple[str, int, int, int], str] = {}
#: (module, name, path as written) -> (the module's `__spec__`, the content digest first read since it was
#: (re)loaded): what `FileRead.edited` compares with.
_FIRST: dict[tuple[str, str, str], tuple[Any, str]] = {}


def files_read(module: str, name: str, seen: dict[int, Any] | None) -> str:
    """The content of each file that the top-level statements binding `name` in user module `module` name by a
    path written there (`open("cfg.json")`, `HERE / "w.npy"`, a module value `CFG_PATH`), as text; "" where they
    name none (the digest as before). Each is left in `seen` (`read_containers`) for the in-process edit check."""
    held = sys.modules.get(module)
    namespace = getattr(held, "__dict__", {})
    file = namespace.get("__file__")
    if not isinstance(file, str):
        return ""
    text = ""
    for written, reads in _statements(file).get(name, []):
        found = [(t, _found(t, reads, file, namespace)) for t in written] + _in_functions(reads, namespace)
        for path_text, path in found:
            if path is None:
                continue
            content = _content(path)
            text += f"\n{name} reads file {path_text!r} {content}"
            key = (module, name, path_text)
            spec = namespace.get("__spec__")
            if key not in _FIRST or _FIRST[key][0] is not spec:
                _FIRST[key] = (spec, content)
            if seen is not None:
                marker = FileRead(module, name, path_text, path)
                seen[id(marker)] = marker
    return text


class FileRead(ContainerRead):
    """A data file a module value was read from at import: edited since, this process holds the old data while
    the digest reads the new, and `--executor inprocess` would store the old model's runs under the new key."""

    def __init__(self, module: str, name: str, written: str, path: str) -> None:
        super().__init__(module, f"{name} (read from {written})")
        self.key, self.path = (module, name, written), path

    def edited(self) -> bool:
        first = _FIRST.get(self.key)
        try:
            return first is not None and _content(self.path) != first[1]
        except OSError:  # gone since
            return True


def _statements(file: str) -> dict[str, list[tuple[tuple[str, ...], frozenset[str]]]]:
    """By name bound: each top-level statement of `file` that binds it and makes a call, with its text constants
    (none where it calls no reader itself: `CFG = get_config()`, read through the function, `_in_functions`) and
    the names it reads (`_STATEMENTS`). A method call that reads into a module value binds it (`CFG.read("c.ini")`,
    `NET.load_state_dict(torch.load("w.pt"))`: attdig31). A text the module writes a file by anywhere
    (`_written`: a log, a cache, a counter a run saves) is left out: it changes as the program runs."""
    linecache.checkcache(file)
    lines = linecache.getlines(file)
    cached = _STATEMENTS.get(file)
    if cached is not None and cached[0] is lines:
        return cached[1]
    found: dict[str, list[tuple[tuple[str, ...], frozenset[str]]]] = {}
    tree = module_tree(file, lines)
    written = written_in(file)
    for statement in tree.body if tree is not None else []:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom):
            continue
        nodes = list(ast.walk(statement))
        calls = [n for n in nodes if isinstance(n, ast.Call)]
        if not calls or any(_writes(c) for c in calls):
            continue
        direct = any(_reads(c) for c in calls)
        texts = tuple(dict.fromkeys(n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)
                                    and n.value.strip() and "\n" not in n.value and n.value not in written))
        reads = frozenset(n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
        bound = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        if direct and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call) and \
                isinstance(statement.value.func, ast.Attribute) and isinstance(statement.value.func.value, ast.Name):
            bound.add(statement.value.func.value.id)  # `CFG.read("c.ini")`
        names_read = tuple(n for n in sorted(reads) if n not in bound and n not in written)
        for name in sorted(bound):
            held = texts + tuple(f"<name {n}>" for n in names_read) if direct else ()
            found.setdefault(name, []).append((held, reads))
    _STATEMENTS[file] = (lines, found)
    return found


def saved_by(module: str) -> frozenset[str]:
    """The names user module `module` writes a file by (`written_in`), which `code_digest_user.container` counts
    as no data: a dict loaded from the file a run saves it to (`CACHE = json.load(open(CACHE_PATH))` and
    `json.dump(CACHE, open(CACHE_PATH, "w"))`) was read by value, as one made from a module value, and each
    run's save trained the model again and was refused in process (attdig31)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    return written_in(file) if isinstance(file, str) and user_module(module) else frozenset()


def written_in(file: str) -> frozenset[str]:
    """`_written` of `file`'s syntax tree, walked once per parse."""
    linecache.checkcache(file)
    tree = module_tree(file, linecache.getlines(file))
    cached = _WRITTEN.get(file)
    if cached is None or cached[0] is not tree:
        cached = _WRITTEN[file] = (tree, _written(tree))
    return cached[1]


def _written(tree: ast.Module | None) -> frozenset[str]:
    """The texts and names of a module that a call of it writes a file by, in its functions too (`open("t.log",
    "a")`, `Path(LOG).open("w")`, `json.dump(c, open("cache.json", "w"))`, `Path("n.txt").write_text(...)`,
    `logging.FileHandler("t.log")`, `np.save(PATH, a)`): a log, cache or counter a run writes, read at import, gave
    a new digest after every run (trained again; refused in process) where the model's data does not change."""
    found: set[str] = set()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)) if tree is not None else []:
        called, method = callee(call), call.func if isinstance(call.func, ast.Attribute) else None
        if not _writes(call) and not _WRITERS.match(called):
            continue
        parts: list[ast.AST] = [k.value for k in call.keywords if k.arg in ("file", "filename", "path", "fname")]
        if method is not None and (called in ("open", "write_text", "write_bytes", "touch")):
            parts += [method.value, *call.args[:1]] if len(call.args) > 1 else [method.value]  # `io.open(P, "w")`
        else:  # `open(P, "w")`, `FileHandler(P)`, `df.to_csv(P)`, `np.save(P, a)`, `torch.save(obj, P)`
            parts += call.args[:2] if called == "save" else call.args[:1]
        for part in parts:
            found.update(n.id if isinstance(n, ast.Name) else str(n.value) for n in ast.walk(part)
                         if isinstance(n, ast.Name) or isinstance(n, ast.Constant) and isinstance(n.value, str))
    return frozenset(found - {"Path", "os", "open", "pathlib"})


def _in_functions(reads: frozenset[str], namespace: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The files that the user's functions a statement calls name in their code and read (`CFG = load()` where
    `def load(): return json.load(open("cfg.json"))`, `CFG = get_config()`), found as `_found` finds them from that
    function's module; not a text its module writes a file by (`_written`: `logging.FileHandler("t.log")` beside
    the config's read). Before attdig31 a function holding a write mode was left out whole (its config's edit kept
    the digest), and one not named `*load*`/`read*` was not looked into (`CFG = get_config()`'s edit kept it)."""
    found: list[tuple[str, str | None]] = []
    for n in sorted(reads):
        function = namespace.get(n)
        if not inspect.isfunction(function) or not user_module(function.__module__):
            continue
        codes = nested_codes(function.__code__)
        called = {x for c in codes for x in c.co_names}
        held = function.__globals__.get("__file__")
        if not any(x == "open" or "load" in x.lower() or x.startswith("read") for x in called) or \
                not isinstance(held, str):
            continue
        written = written_in(held)
        texts = [c for code in codes for c in code.co_consts if isinstance(c, str) and c.strip() and "\n" not in c
                 and c not in written and c not in _MODES | _MODES_MORE]
        found += [(t, _found(t, frozenset(called), held, function.__globals__)) for t in dict.fromkeys(texts)]
    return found


def _reads(call: ast.Call) -> bool:
    """Whether a call reads a file by its name: `open`, `*load*` (`json.load`, `np.load`, `yaml.safe_load`,
    `torch.load`), `read*` (`read_text`, `pd.read_csv`), `fromfile`, `genfromtxt`."""
    name = callee(call).lower()
    return name == "open" or "load" in name or name.startswith("read") or name in ("fromfile", "genfromtxt")


def _writes(call: ast.Call) -> bool:
    """Whether a call opens a file to write it (`open("train.log", "a")`, `Path("train.log").open("a")`): a file a
    run changes is no data the model was built from, and reading it would give a new digest after every run (a
    refusal in process). A path's `open` takes the mode first (attdig31: `Path(...).open("a")` was read)."""
    if callee(call) != "open":
        return False
    modes = [a for a in call.args[:2]] + [k.value for k in call.keywords if k.arg == "mode"]
    return any(isinstance(m, ast.Constant) and isinstance(m.value, str) and m.value in _MODES | _MODES_MORE
               for m in modes)


def _found(written: str, reads: frozenset[str], file: str, namespace: dict[str, Any]) -> str | None:
    """The regular file path `written` (a text constant, or "<name N>": module value N) names: an absolute path as
    it is; a relative one in the module's folder where the statement reads `__file__`, else in a folder a module
    value it reads names (`HERE`, `DATA`), else in the working directory, as `open` finds it; None for none."""
    if written.startswith("<name "):
        value = namespace.get(written[6:-1])
        if not isinstance(value, str | PurePath) or not str(value):
            return None
        candidates = [os.path.abspath(os.fspath(value))]
    elif os.path.isabs(written):
        candidates = [written]
    else:
        folders = [os.path.dirname(os.path.abspath(file))] if "__file__" in reads else []
        for n in sorted(reads):
            value = namespace.get(n)
            if isinstance(value, str | PurePath) and str(value) and os.path.isdir(os.fspath(value)):
                folders.append(os.path.abspath(os.fspath(value)))
        candidates = [os.path.join(folder, written) for folder in folders or [os.getcwd()]]
    for candidate in candidates:
        try:
            if os.path.isfile(candidate) and not os.path.realpath(candidate).startswith(_LIVE):
                return candidate
        except (OSError, ValueError):  # a name too long, a NUL byte: no path
            continue
    return None


def _content(path: str) -> str:
    """A SHA-256 of `path`'s content: a `.json` or `.yaml` file's by what it parses to (its layout and comments
    aside; keys in the file's order, which a model iterating them builds in), any other's by its bytes."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if key in _CONTENT:
        return _CONTENT[key]
    text = "bytes " + file_sha256(path)
    parsed = _parsed(path, stat.st_size)
    if parsed is not None:
        text = "parsed " + hashlib.sha256(parsed.encode()).hexdigest()
    _CONTENT[key] = text[:32]
    return _CONTENT[key]


def _parsed(path: str, size: int) -> str | None:
    """A `.json` or `.yaml` file (up to 64 MB) as canonical JSON text in its own key order; None where it is
    another kind or does not parse (read by its bytes)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".json", ".yaml", ".yml") or size > 64 << 20:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            if suffix == ".json":
                value = json.load(handle)
            else:
                import yaml  # type: ignore[import-untyped]

                value = yaml.safe_load(handle)
        return json.dumps(value, default=repr, separators=(",", ":"))
    except Exception:  # not valid JSON or YAML, or no yaml installed: its bytes
        return None
