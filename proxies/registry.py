"""Proxy registry: built-ins register with a decorator, third-party packages through the
`memprox.proxies` entry-point group (the entry point names a Proxy subclass, e.g.
`[project.entry-points."memprox.proxies"] my_proxy = "my_pkg.module:MyProxy"`)."""

from __future__ import annotations

import ast
import inspect
import re
import warnings
from collections import Counter
from typing import Any

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.registry import Registry, check_selectable_name, did_you_mean, load_class_plugins
from proxies.base import Proxy

ENTRY_POINT_GROUP = "memprox.proxies"
#: Names of the columns the per-sample tables hold beside one column per proxy (scores/*.csv and
#: `SampleTracker.scores`: index, label, clean_label, positive, file or text; the suspects tables:
#: label_name, predicted, ...), and the leaderboard's reference rows: a proxy under one of them
#: replaced that column with its scores (a proxy named `positive` overwrote the ground truth).
RESERVED_NAMES = frozenset({"rank", "index", "label", "clean_label", "positive", "file", "text", "label_name",
                            "predicted", "predicted_name", "p_label", "suggested", "suggested_name", "p_suggested",
                            "predicted_other", "n_seeds", "duplicates", "duplicate_files",
                            "duplicate_labels_differ", "reference"})
PROXIES: Registry[type[Proxy]] = Registry("proxy")
_plugins_loaded = False


def register_proxy(cls: type[Proxy]) -> type[Proxy]:
    """Class decorator; a second proxy under a taken name is an error, not a silent overwrite. The
    class is checked here, when its module is imported, because a flaw found later (a name
    `--proxies` cannot select, no `score`) would show only after every run has trained."""
    for attr in ("name", "description", "citation"):
        if not getattr(cls, attr, None):
            raise TypeError(f"proxy {cls.__name__} must declare a non-empty `{attr}`")
    check_selectable_name(cls, "proxy", "--proxies")
    if cls.name == "all":  # `--proxies all` selects every proxy: this one could never be selected alone
        raise TypeError(f"proxy {cls.__name__} has name 'all', which `--proxies all` reads as every proxy; "
                        "give it another name")
    if cls.name in RESERVED_NAMES:
        raise TypeError(f"proxy {cls.__name__} has name {cls.name!r}, which the per-sample tables use for a column of "
                        f"their own ({', '.join(sorted(RESERVED_NAMES))}); give it another name")
    _check_declarations(cls)
    PROXIES.register(cls.name, cls)
    return cls


def _check_declarations(cls: type[Proxy]) -> None:
    """`score` implemented, `defaults` a dict of named parameters, `recorders` a tuple of
    RecorderRequest and each `variants_in_all` entry a dict of declared parameters."""
    where = f"proxy {cls.__name__} ({cls.name!r})"
    try:  # `--proxies all` and `make_proxy(name)` build it with no arguments
        inspect.signature(cls).bind()
    except TypeError:
        raise TypeError(f"{where} cannot be built without arguments ({cls.__name__}{inspect.signature(cls)}): "
                        "declare each parameter in `defaults` with a default, read it as self.params[...], "
                        "and check it in `validate`") from None
    except ValueError:  # no signature to read (a builtin __init__): nothing to check
        pass
    if getattr(cls, "score", None) is Proxy.score:
        raise TypeError(f"{where} must implement `score(self, ctx) -> np.ndarray` (one float per sample)")
    try:  # called as score(ctx) on an instance, after every run has trained: a wrong signature fails here
        inspect.signature(cls.score).bind(None, None)
    except TypeError:
        raise TypeError(f"{where}: `score{inspect.signature(cls.score)}` cannot be called as score(self, ctx); "
                        "define `def score(self, ctx)`") from None
    except ValueError:  # no signature to read: nothing to check
        pass
    if not isinstance(cls.defaults, dict) or not all(isinstance(k, str) for k in cls.defaults):
        raise TypeError(f"{where}: `defaults` must be a dict of parameter name -> default value "
                        f"(got {cls.defaults!r})")
    recorders = inspect.getattr_static(cls, "recorders")  # a property computes them from the parameters
    if not isinstance(recorders, property) and not (
            isinstance(recorders, tuple | list) and all(isinstance(r, RecorderRequest) for r in recorders)):
        raise TypeError(f"{where}: `recorders` must be a tuple of RecorderRequest, e.g. "
                        f"(RecorderRequest.of(\"train_loss\"),) (got {recorders!r})")
    for variant in cls.variants_in_all:
        if not isinstance(variant, dict) or not set(variant) <= set(cls.defaults):
            raise TypeError(f"{where}: each `variants_in_all` entry must be a dict of parameters declared in "
                            f"`defaults` ({', '.join(cls.defaults) or 'none'}); got {variant!r}")
        if all(value == cls.defaults[key] for key, value in variant.items()):  # `all` would score it once
            raise TypeError(f"{where}: the `variants_in_all` entry {variant!r} is its defaults, which `--proxies "
                            "all` runs anyway; list only parameter sets that differ from `defaults`")


def load_plugins() -> None:
    """Import proxies installed by other packages; a broken plugin warns instead of failing."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        load_class_plugins(ENTRY_POINT_GROUP, PROXIES, Proxy, register_proxy)


def available_proxies() -> dict[str, type[Proxy]]:
    load_plugins()
    return dict(sorted(PROXIES.items()))


def make_proxy(name: str, **params: Any) -> Proxy:
    proxies = available_proxies()
    PROXIES.check_claimed_once(name)
    PROXIES.check_loaded(name)
    if name not in proxies:
        unregistered = _unregistered(name)
        if unregistered is not None:
            raise HarnessError(f"class {unregistered.__qualname__} ({unregistered.__module__}) has name {name!r} but "
                               "is not registered: put @register_proxy above it (from proxies.registry import "
                               "register_proxy)")
        raise HarnessError(f"unknown proxy {name!r}{did_you_mean([name], proxies)}; valid proxies: "
                           f"{', '.join(proxies)} (or 'all'); a proxy of your own registers when its module is "
                           "imported (Python) or installed under the `memprox.proxies` entry point (the command "
                           "line), see docs/extending.md")
    return proxies[name](**params)


def _unregistered(name: str) -> type[Proxy] | None:
    """A defined `Proxy` subclass named `name` that never went through `register_proxy`: its module
    was imported, so the usual hint ("registers when its module is imported") would mislead."""
    todo, seen = list(Proxy.__subclasses__()), set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        own = getattr(cls, "name", None)  # any class in the process: a name that is no str is none of ours
        if isinstance(own, str) and own == name:
            return cls
    return None


def parse_selection(selection: str) -> list[tuple[str, dict[str, Any]]]:
    """'csl,curvature(n=2),curvature(n=10,h=0.01)' -> [(name, params), ...] (values as Python literals).
    One trailing comma is allowed (`csl,`, as `--tasks mislabeled,`); an empty item is refused, named."""
    text = selection.rstrip()
    text = text[:-1] if text.endswith(",") and text[:-1].strip() and not text[:-1].rstrip().endswith(",") else text
    items = re.findall(r"\s*([A-Za-z_][\w.-]*)\s*(?:\(([^)]*)\))?\s*(?:,|$)", text)
    if _squeezed(",".join(n + (f"({a})" if a else "") for n, a in items)) != _squeezed(text):
        if "" in (item.strip() for item in re.split(r",(?![^(]*\))", text)):  # commas outside parentheses
            raise HarnessError(f"cannot parse --proxies {selection!r}: an empty item between commas (a value lost, "
                               "e.g. an unset shell variable?); list the proxies with one comma between each, e.g. "
                               "--proxies csl,aum")
        raise HarnessError(f"cannot parse --proxies {selection!r}; use e.g. 'csl,curvature(n=2),curvature(n=10)'")
    out = []
    for name, args in items:
        params: dict[str, Any] = {}
        parts = [a.strip() for a in args.split(",")] if args.strip() else []
        if parts and not parts[-1]:  # one trailing comma, as Python's calls and --seeds 5, allow
            parts.pop()
        for at, part in enumerate(parts, 1):
            if not part:  # `n=2,,h=0.1` (an unset shell variable between commas) was dropped silently
                raise HarnessError(f"{name}({args}) has an empty parameter (item {at}); remove the extra comma or "
                                   "give it KEY=VALUE")
            key, sep, value = part.partition("=")
            if not sep:
                raise HarnessError(f"proxy parameter {part!r} in {name}({args}) must be KEY=VALUE")
            if key.strip() in params:  # the last would win silently
                raise HarnessError(f"{name}({args}) sets {key.strip()} twice; pass it once")
            params[key.strip()] = _literal(value.strip())
        out.append((name, params))
    return out


def _squeezed(text: str) -> str:
    """`text` without any whitespace (tabs and newlines too, which the item pattern skips as well)
    and without empty parentheses (`csl()` is csl with its defaults)."""
    return re.sub(r"([\w.-])\(\)", r"\1", re.sub(r"\s", "", text))


def _literal(text: str) -> Any:
    """A Python literal (2, 0.1, 'max', True), or the text itself when it is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def resolve_proxies(selection: str, params: dict[str, dict[str, Any]] | None = None) -> list[Proxy]:
    """'all', or a comma list whose items may carry parameters (`curvature(n=2)`), so variants of
    one proxy sit side by side; `params` (from --proxy-arg) maps proxy name -> overrides for every
    selected instance of that proxy. A parameter set both ways is refused: one would be ignored."""
    params = params or {}
    everything = selection.strip() == "all"
    if everything:  # every proxy, plus the variants a proxy asks to be compared in `all`
        chosen = [(n, dict(v)) for n, cls in available_proxies().items()
                  for v in ({}, *getattr(cls, "variants_in_all", ()))]
    else:
        chosen = parse_selection(selection)
    if not chosen:
        raise HarnessError("no proxies selected; pass --proxies all or a comma-separated list")
    names = list(dict.fromkeys(n for n, _ in chosen))
    if not everything and "all" in names and "all" not in available_proxies():  # 'unknown proxy all ... (or 'all')'
        raise HarnessError(f"--proxies {selection.strip()}: 'all' selects every proxy and the variants each lists, "
                           "and takes no other names nor parameters; pass all alone (--proxy-arg NAME.PARAM=V sets "
                           "a parameter of every selected instance of NAME) or list the proxies you want")
    for name in params:
        if name not in names:
            PROXIES.check_loaded(name)
            raise _unselected(name, names)
    if not everything:  # inline values would override --proxy-arg silently
        for name, inline in chosen:
            twice = sorted(set(inline) & set(params.get(name, {})))
            if twice:
                raise HarnessError(f"{name}.{twice[0]} is given both by --proxy-arg and in --proxies "
                                   f"{name}({twice[0]}={inline[twice[0]]!r}); pass it once")
    proxies = [make_proxy(n, **{**params.get(n, {}), **p}) for n, p in chosen]
    if everything:  # --proxy-arg may turn a default into its listed variant: keep one of the two
        _say_merged(proxies, params)
        proxies = list({p.label: p for p in proxies[::-1]}.values())[::-1]
    duplicated = sorted(label for label, k in Counter(p.label for p in proxies).items() if k > 1)
    if duplicated:
        raise HarnessError(f"proxy variant(s) selected twice: {', '.join(duplicated)}; list each once")
    return proxies


def _say_merged(proxies: list[Proxy], params: dict[str, dict[str, Any]]) -> None:
    """Warn, one line per label, when `--proxy-arg` made two entries of `--proxies all` the same
    proxy (`learning_time.rule=count` turns the default into its listed variant): it is scored
    once, under one column. It was dropped without a word, and the banner's count (15 proxies, not
    16) was the only trace of the column the user had expected to compare with."""
    for label, k in Counter(p.label for p in proxies).items():
        if k < 2:
            continue
        proxy = next(p for p in proxies if p.label == label)
        given = params.get(proxy.name, {})
        cause = next((v for v in proxy.variants_in_all if all(key in given and given[key] == value
                                                                for key, value in v.items())), given)
        args = " ".join(f"{proxy.name}.{key}={value}" for key, value in cause.items())
        warnings.warn(f"--proxy-arg {args} makes {proxy.name} the same as its variant {label}, which --proxies all "
                      f"runs beside it: one column, {label}, not two (without {args}, both are scored)",
                      stacklevel=3)


def _unselected(name: str, selected: list[str]) -> HarnessError:
    """`--proxy-arg NAME.PARAM=V` for a proxy `--proxies` does not select. The fix depends on the
    name: a known proxy is added to --proxies, a mistyped one is corrected (the message said only
    "not among the selected proxies", and with `--proxies all` that read as a contradiction)."""
    if name in available_proxies():
        return HarnessError(f"--proxy-arg names proxy {name!r}, which is not among the selected proxies "
                            f"({', '.join(selected)}); add it to --proxies or drop the argument")
    return HarnessError(f"--proxy-arg names proxy {name!r}, which is not among the selected proxies"
                        f"{did_you_mean([name], available_proxies())}: no proxy has that name; fix it or drop the "
                        "argument (`python -m harness list` shows every proxy)")
