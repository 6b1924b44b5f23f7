"""The top-level statements of a user module that change a module list, dict or set other than by an assignment
or a method call of its own (`code_digest_user._assignments`), for the code digest (`harness.code_digest`): a loop,
an `if`, a `with` or a `try` that fills it (`W = []` then `for i in range(3): W.append(i * 8)`), and a decorator
or call of a function of the module that fills it (`ACTS = {}` filled by `@register`-decorated functions). Each
was unseen (digest30): the list was written empty, its value was not read (a cache a run fills is written so),
and `i * 8` -> `i * 16` or an edit of a registered function kept the digest and served the old model's runs.
Each is hashed by its text (a decorated function's with its body), and the value by content where plain."""

from __future__ import annotations

import ast

#: A name's assignment in its module: its text, its value's text where it is a literal, the names it reads
#: (`cfg.widths` as such too: `code_digest_user.code_named` follows the code of those of the user's).
Assignment = tuple[str, str | None, frozenset[str]]

#: file -> (the `linecache` lines parsed, their syntax tree; None where they do not parse): one parse of a user
#: module per process for what reads its top-level statements (`code_digest_user`, `code_digest_files`,
#: `code_digest_fills`), again once its file is edited (`linecache.checkcache` hands out new lines).
_TREES: dict[str, tuple[list[str], ast.Module | None]] = {}

_COMPOUND = tuple(getattr(ast, n) for n in ("For", "AsyncFor", "While", "If", "With", "AsyncWith", "Try", "TryStar")
                  if hasattr(ast, n))


def module_tree(file: str, lines: list[str]) -> ast.Module | None:
    """The syntax tree of `lines` (`file`'s, as `linecache` gives them), parsed once while they are the same list."""
    cached = _TREES.get(file)
    if cached is None or cached[0] is not lines:
        try:
            tree: ast.Module | None = ast.parse("".join(lines))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tree = None
        cached = _TREES[file] = (lines, tree)
    return cached[1]


def names(node: ast.AST) -> frozenset[str]:
    """The names `node` reads, and each attribute chain on one as dotted text (`cfg.widths`, `np.random.rand`)."""
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            found.add(n.id)
        elif isinstance(n, ast.Attribute):
            chain, inner = [n.attr], n.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                found.add(".".join([inner.id, *reversed(chain)]))
    return frozenset(found)


def mutators(tree: ast.Module) -> dict[str, set[str]]:
    """The module's top-level functions that change a module-level name they do not bind: `ACTS[f.__name__] = f`,
    `LAYERS.append(w)`, `global W; W = ...`, by function name -> those names."""
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            declared = {n for s in ast.walk(node) if isinstance(s, ast.Global) for n in s.names}
            local = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)} | \
                {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - declared
            changed = (_changed(node) | declared) - local
            if changed:
                found[node.name] = changed
    return found


def changes(node: ast.stmt, by: dict[str, set[str]]) -> list[tuple[str, Assignment]]:
    """The names a top-level statement changes other than as `_assignments` sees: any in a loop, `if`, `with`
    or `try`, and those a function of `by` (`mutators`) changes where it decorates a definition or is called
    by the statement, each with the statement's text (a decorated definition's with its body)."""
    if isinstance(node, _COMPOUND):
        changed = _changed(node)
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        changed = {n for d in node.decorator_list for n in by.get(_called(d), ())}
    else:
        changed = {n for c in ast.walk(node) if isinstance(c, ast.Call) for n in by.get(_called(c.func), ())}
    if not changed:
        return []
    text, read = "changed " + ast.unparse(node), names(node)
    return [(n, (text, None, read | {n})) for n in sorted(changed)]


def effect(node: ast.stmt) -> list[tuple[str, Assignment]]:
    """A top-level call of a module's function or a setting of a module's attribute, a change of state outside
    the module's own names (`torch.set_default_dtype(torch.float64)`, `torch.manual_seed(1)`, `nn.ReLU.forward
    = f`), under "<effects>", with its root name as the second item (`code_digest_user.effects` keeps those that
    name a module): it changes what every model builds, and its edit kept the digest (digest30)."""
    target: ast.expr | None = None
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        target = node.value.func
    elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
    else:
        return []
    if not isinstance(target, ast.Attribute):  # `W = torch.float32`, `print(x)`: no change through a module
        return []
    while isinstance(target, ast.Attribute):
        target = target.value
    return [("<effects>", (ast.unparse(node), target.id, names(node)))] if isinstance(target, ast.Name) else []


def _called(node: ast.expr) -> str:
    """The name of the function a decorator or call names (`register`, `register("relu")`); "" for another."""
    node = node.func if isinstance(node, ast.Call) else node
    return node.id if isinstance(node, ast.Name) else ""


def _changed(node: ast.AST) -> set[str]:
    """The names code changes: `W.append(8)`, `W[k] = 8`, `W += [8]`, `W = [8]` (a loop's variable too)."""
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name):
            found.add(n.func.value.id)
        elif isinstance(n, ast.Subscript | ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            found.add(n.value.id if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) else
                      n.id if isinstance(n, ast.Name) else "")
    found.discard("")
    return found
