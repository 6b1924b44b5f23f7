"""One small registry for every pluggable kind (proxies, recorders, tasks, datasets, models).

Four hand-rolled dicts used to behave four ways on a name clash (overwrite silently, drop a plugin
without a word, ...). A clash is a programming error inside memprox and a user-visible surprise
for a plugin, so registering a taken name raises unless the caller opts into replacing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.metadata
import inspect
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, refusing clashes; `kind` names what is registered in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        #: names two or more installed plugins claim (name -> their entry points): none of them is
        #: loaded, since which one won would depend on the order site-packages lists them in
        self.withheld: dict[str, list[str]] = {}
        #: entry-point name -> why that installed plugin is not registered (it failed to import, ...)
        self.failed: dict[str, str] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Register `item`; a taken name raises unless `replace`, or unless `item` redefines the
        registered one (same module and qualified name: a notebook cell run again, a reloaded
        module), which replaces it, as re-running the definition means to."""
        if not name:
            raise TypeError(f"a {self.kind} needs a non-empty name")
        taken = self._items.get(name)
        if name in self._items and not replace and taken is not item and not _redefines(item, taken):
            clash = ValueError(f"{self.kind} {name!r} is already registered by {_origin(taken)}; give "
                               f"{_origin(item)} another name")
            clash.taken_name = name  # type: ignore[attr-defined]  # what a plugin's loader says selecting it runs
            clash.claimant = _origin(item)  # type: ignore[attr-defined]  # who else claimed it (load_class_plugins)
            clash.kind = self.kind  # type: ignore[attr-defined]  # a recorder's clash is no proxy's
            raise clash
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Forget `name` (a plugin's half-imported class, `load_class_plugins`)."""
        self._items.pop(name, None)

    def check_claimed_once(self, name: str) -> None:
        """HarnessError for a name several installed plugins claim (none of them is registered)."""
        if name in self.withheld and name not in self._items:
            raise claimed_twice(self.kind, name, self.withheld[name])

    def check_loaded(self, name: str) -> None:
        """HarnessError for a name an installed plugin claims but could not register: "unknown
        proxy" beside a warning scrolled away left the author to connect the two."""
        if name in self.failed and name not in self._items:
            raise HarnessError(f"{self.failed[name]}, so {self.kind} {name!r} is not available; fix the plugin "
                               "(its import error or class) and run again, or uninstall it")

    def get(self, name: str) -> T:
        """The item, or a HarnessError that lists the valid names (bad user input, exit 2)."""
        if name not in self._items:
            raise HarnessError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items)) or 'none'}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def keys(self):
        return self._items.keys()

    def values(self):
        return self._items.values()


def installed_plugins(group: str, kind: str, keep: Callable[[str], bool] = lambda name: False
                      ) -> tuple[dict[str, importlib.metadata.EntryPoint], dict[str, list[str]]]:
    """The entry points of `group` by name, and the names two or more installed packages claim
    (name -> their entry points), which are left out with a warning: which one won would depend on
    the order site-packages lists them in. `keep(name)`: a name registered already, whose own clash
    check reports the plugins instead."""
    claims: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda ep: (ep.name, ep.value)):
        if ep.value not in (other.value for other in claims.get(ep.name, [])):
            claims.setdefault(ep.name, []).append(ep)
    withheld = {name: [_claimant(ep) for ep in eps] for name, eps in claims.items() if len(eps) > 1 and not keep(name)}
    for name, values in withheld.items():
        warnings.warn(f"{kind} {name!r} is claimed by {len(values)} installed plugins ({', '.join(values)}): none is "
                      "used, since which one loaded first would depend on the order site-packages lists them; "
                      "uninstall all but one", stacklevel=3)
    return {name: eps[0] for name, eps in claims.items() if name not in withheld}, withheld


def _claimant(ep: importlib.metadata.EntryPoint) -> str:
    """An entry point's value and, when known, the distribution that installed it: "uninstall all but
    one" named only `pkg.core:TopLoss` and `pkg:TopLoss`, not which of two installed packages to remove."""
    dist = getattr(ep, "dist", None)
    return f"{ep.value} from {dist.name} {dist.version}" if dist is not None else ep.value


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    """The name of the distribution that installed `ep`, when known."""
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) if dist is not None else None


def claimed_twice(kind: str, name: str, values: list[str]) -> HarnessError:
    return HarnessError(f"{kind} {name!r} is claimed by {len(values)} installed plugins ({', '.join(values)}), so "
                        "none is used; uninstall all but one, or rename its `name` and entry point")


def did_you_mean(names: Iterable[str], valid: Iterable[str]) -> str:
    """` (did you mean 'x'?)` naming the closest valid name of each mistyped one, or "" when none is close."""
    valid = list(valid)
    close = [m for n in names for m in difflib.get_close_matches(n.lower(), valid, n=1)]
    return f" (did you mean {', '.join(repr(m) for m in close)}?)" if close else ""


#: A name the command line can select: `--proxies a,b(k=1)` splits at commas and brackets and
#: `--proxy-arg NAME.PARAM=V` / `--task-arg NAME.PARAM=V` at the first dot.
SELECTABLE_NAME = re.compile(r"[a-z_][a-z0-9_-]*")


def check_selectable_name(cls: type, kind: str, flags: str) -> None:
    """TypeError when `cls.name` is no name `flags` can select (checked when the class registers,
    not after every run has trained)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not SELECTABLE_NAME.fullmatch(name):
        raise TypeError(f"{kind} {cls.__name__} has name {name!r}, which {flags} cannot select: use lower-case "
                        "letters, digits, '_' and '-', starting with a letter or '_' (e.g. 'late_loss')")


def _definition(item: object) -> tuple[tuple[str, str], ...] | None:
    """Where `item` was defined: ((module, qualified name),) of a class or function; for a registry
    entry wrapping code (a dataset's `load`, a model's `factory`), those of its callables."""
    if isinstance(item, type) or inspect.isfunction(item):
        return ((item.__module__, item.__qualname__),)
    if dataclasses.is_dataclass(item):
        values = (getattr(item, f.name) for f in dataclasses.fields(item))
        inner = [_definition(v) for v in values if callable(v)]
        return tuple(pair for d in inner if d for pair in d) if inner and None not in inner else None
    return None


def _origin(item: object) -> str:
    """`module.QualName` of where `item` was defined (what a user can find), else its repr."""
    where = _definition(item)
    return ", ".join(f"{module}.{name}" for module, name in where) if where else repr(item)


def _redefines(new: object, old: object) -> bool:
    """Whether `new` is a fresh definition of `old` (a notebook cell run again, a module reloaded):
    both defined at one module and qualified name."""
    where = _definition(new)
    return where is not None and where == _definition(old)


def load_class_plugins(group: str, registry: Registry[type], base: type, register: Callable[[type], type]) -> None:
    """Register the classes other packages install under the entry-point `group` (each names a
    `base` subclass), through `register` (the kind's own checks). A plugin that fails to import, is
    no `base` subclass, takes a registered name or fails `register`'s checks warns and is ignored:
    a third-party package must not take the harness down. A name two installed plugins claim (their
    classes' `name`, under entry points of other names) is withheld from both, as `installed_plugins`
    withholds an entry-point name: the first loaded kept it, and which one that was followed the entry
    points' alphabetical order (`--proxies top_loss` scored another package's class, with a warning)."""
    kind = registry.kind
    points, withheld = installed_plugins(group, kind, keep=lambda name: name in registry)
    registry.withheld.update(withheld)
    own = set(registry)  # registered before any plugin loaded: built-ins, a user's imported modules
    contested: dict[str, list[str]] = {}  # a name two plugins registered -> each claimant (module.QualName)
    loaded: dict[str, object] = {}  # entry-point name -> what it loaded
    misnamed: list[tuple[str, str, type]] = []  # (where, class name, class) of entry points named unlike it
    for ep in points.values():
        where = f"{kind} plugin {ep.name!r} ({ep.value})"
        before = dict(registry.items())
        try:
            with contextlib.redirect_stdout(sys.stderr):  # its prints at import are not memprox's report
                cls = ep.load()
        except KeyboardInterrupt:
            _forget_half_imported(registry, before)
            raise
        except SystemExit as e:  # a script's `parse_args()` or `sys.exit()` at import ended memprox with exit 2
            _forget_half_imported(registry, before)
            registry.failed[ep.name] = load_failure(where, e)
            warnings.warn(registry.failed[ep.name] + _failed_note(registry, ep.name, ep, points, loaded), stacklevel=3)
            continue
        except BaseException as e:  # an Exception, or another BaseException (pytest.skip at its top level)
            _forget_half_imported(registry, before)
            registry.failed[ep.name] = load_failure(where, e)
            taken = getattr(e, "taken_name", ep.name)  # its class registered a taken name as the module ran
            claimant = getattr(e, "claimant", None)  # its class took a name registered before it
            if getattr(e, "kind", None) != kind:  # none, or another registry's (its recorder's name was taken)
                claimant = None
            if claimant is not None and _contest(registry, own, contested, str(taken), str(claimant)):
                warnings.warn(registry.failed[ep.name] + _withheld_note(kind, str(taken)), stacklevel=3)
            else:
                warnings.warn(registry.failed[ep.name] + _failed_note(registry, str(taken), ep, points, loaded),
                              stacklevel=3)
            continue
        if not (isinstance(cls, type) and issubclass(cls, base)):
            registry.failed[ep.name] = f"{where} is not a {base.__name__} subclass"
            warnings.warn(f"{registry.failed[ep.name]}; ignored", stacklevel=3)
            continue
        name = getattr(cls, "name", None)  # not a str (e.g. a list, unhashable): `register` refuses it below
        taken = registry[name] if isinstance(name, str) and name in registry else None
        if taken is not None and taken is not cls:
            claimant = f"{cls.__module__}.{cls.__qualname__}"
            if _contest(registry, own, contested, str(name), claimant):
                registry.failed[ep.name] = f"{where} is named {name!r} like {_origin(taken)}"
                warnings.warn(registry.failed[ep.name] + _withheld_note(kind, str(name)), stacklevel=3)
                continue
            runs = _selects_other(registry, str(name))
            warnings.warn(f"{where} is named {name!r} like {taken.__module__}.{taken.__qualname__}, which keeps "
                          f"the name; the plugin is ignored (give it another `name`){runs}", stacklevel=3)
            continue
        try:
            register(cls)
        except TypeError as e:
            registry.failed[ep.name] = f"{where} is invalid: {e}"
            warnings.warn(f"{registry.failed[ep.name]}; ignored", stacklevel=3)
            continue
        loaded[ep.name] = cls
        if ep.name != name:  # selected by the class's name: the entry point's would be unknown
            misnamed.append((where, str(name), cls))
    noted = {ep.name for ep in points.values()
             if _contest_failed(registry, own, contested, ep, [p for p in points.values() if p.name in loaded])}
    for where, name, cls in misnamed:  # an alias beside an entry point of the class's own name needs no fix
        if loaded.get(name) is not cls and name not in noted:  # its own failed entry point holds that name
            warnings.warn(f"{where} registers {kind} {name!r}: select it by that name, and name the entry "
                          f"point {name!r} too", stacklevel=3)
    for name, claimants in contested.items():  # none of them is used: which one won was an accident of order
        registry.remove(name)
        registry.withheld[name] = claimants


def _contest_failed(registry: Registry, own: set[str], contested: dict[str, list[str]],
                    ep: importlib.metadata.EntryPoint, loaded: list[importlib.metadata.EntryPoint]) -> bool:
    """An installed plugin that failed to load, whose entry-point name another package's class took:
    two plugins claim the name, as when both load, so neither is used. Before, selecting the name
    scored the other package's class as if it were the failed plugin's (in either loading order).
    A class its own distribution registered (through another of its entry points that loaded, `loaded`,
    from another top-level package of it) is no second plugin: "claimed by 2 installed plugins;
    uninstall all but one" was refused of a single installed distribution. That class is what the name
    selects, said once after loading (whichever loaded first): said only when the failed one loaded after it,
    as "runs ..., not this plugin", it read as another package's. True where it said that (the caller then
    drops its "name the entry point" line for that name); False otherwise, a contest warned of included."""
    name = ep.name
    if name not in registry.failed or name not in registry or name in own or name in contested:
        return False
    package = ep.module.partition(".")[0]
    where = _definition(registry[name]) or ()
    if any(module.partition(".")[0] == package for module, _ in where):
        return False  # its own package registered the name (a stale entry point): `_selects_other` says so
    kin = _kin(registry, name, ep, loaded)
    if kin is not None:  # its own distribution's other entry point registered it
        warnings.warn(f"{registry.kind} {name!r} selects {_origin(registry[name])}, which entry point {kin.name!r} "
                      f"({kin.value}) of the same distribution ({_dist_name(ep)}) registers: its entry point {name!r} "
                      f"({ep.value}) failed to load (above), so {name!r} runs that class instead", stacklevel=4)
        return True
    contested[name] = [_origin(registry[name]), f"{ep.value}, which failed to load"]
    warnings.warn(f"{registry.kind} {name!r} is claimed by installed plugin {name!r} ({ep.value}), which failed to "
                  f"load, and by {_origin(registry[name])}: neither is used, since which one {name!r} selects would "
                  "follow which of them imports; fix the plugin that failed, or rename one of the two (its `name` "
                  "and entry point)", stacklevel=4)
    return False


def _kin(registry: Registry, name: str, ep: importlib.metadata.EntryPoint,
         loaded: Iterable[importlib.metadata.EntryPoint]) -> importlib.metadata.EntryPoint | None:
    """The loaded entry point of `ep`'s own distribution whose module registered `name`, if any."""
    dist = _dist_name(ep)
    where = (_definition(registry[name]) or ()) if name in registry and dist is not None else ()
    return next((other for other in loaded if _dist_name(other) == dist and any(m == other.module for m, _ in where)),
                None)


def _failed_note(registry: Registry, name: str, ep: importlib.metadata.EntryPoint, points: Mapping[str, Any],
                 loaded: Mapping[str, object]) -> str:
    """`_selects_other` for a plugin that failed to load, except where another entry point of its own
    distribution, in another package, registered the name: `_contest_failed` says so once loading is done."""
    kin = _kin(registry, name, ep, [p for p in points.values() if p.name in loaded]) if name == ep.name else None
    if kin is not None and kin.module.partition(".")[0] != ep.module.partition(".")[0]:
        return ""
    return _selects_other(registry, name, ep.module)


def _contest(registry: Registry, own: set[str], contested: dict[str, list[str]], name: str, claimant: str) -> bool:
    """Note `claimant` (module.QualName) as a second plugin claiming `name`, when the class that holds
    the name came from a plugin loaded before it (not a built-in or a module the user imported);
    whether it did."""
    if name in own or name not in registry:
        return False
    claimants = contested.setdefault(name, [_origin(registry[name])])
    if claimant not in claimants:
        claimants.append(claimant)
    return True


def _withheld_note(kind: str, name: str) -> str:
    return (f"; another installed plugin registered {kind} {name!r} first, and which of them loads first follows "
            f"the entry points' order, so neither is used: selecting {name!r} is refused until one is renamed "
            "(its `name` and entry point) or uninstalled")


def _selects_other(registry: Registry, name: str, plugin_module: str = "") -> str:
    """What selecting `name` runs when an installed plugin that claimed it was left out: another
    class registered under that name (a built-in), whose numbers the user would otherwise read as
    the plugin's (`--proxies csl` with a plugin named "csl" scored the built-in CSL); or a class the
    plugin's module registered as it was imported (an entry point naming a class it lacks)."""
    if name not in registry:
        return ""
    where = _definition(registry[name]) or ()
    if plugin_module and any(module == plugin_module for module, _ in where):
        return f"; selecting {registry.kind} {name!r} runs {_origin(registry[name])}, which its module registered"
    package = plugin_module.partition(".")[0]
    if package and any(module.partition(".")[0] == package for module, _ in where):  # a stale entry point's package
        return f"; selecting {registry.kind} {name!r} runs {_origin(registry[name])}, which its package registered"
    return f"; selecting {registry.kind} {name!r} runs {_origin(registry[name])}, not this plugin"


def _forget_half_imported(registry: Registry, before: dict[str, object]) -> None:
    """Undo what a plugin whose import failed registered from modules left half run (Python drops
    such a module from `sys.modules`): a class registered above the line that raised or exited was
    kept, `--proxies all` ran it and the warning said that its name ran another class. A module that
    finished importing keeps its registrations, as when a user imports it."""
    for name, item in list(registry.items()):
        if before.get(name) is item:
            continue
        where = _definition(item)
        if where is not None and any(module not in sys.modules for module, _ in where):
            if name in before:  # it replaced a definition of the same name: that one is back
                registry.register(name, before[name], replace=True)
            else:
                registry.remove(name)


def load_failure(where: str, e: BaseException) -> str:
    """Why the plugin `where` names did not load, with the fix: one wording for every kind of plugin (the
    executor and dataset plugins wrote their own, and a `sys.exit()` at their import ended memprox silently)."""
    if isinstance(e, SystemExit):
        return (f"{where} exited while imported (SystemExit: {e.code}; any lines just above are its own, e.g. "
                "argparse's usage): a module must not run a script when imported; put that code under "
                "`if __name__ == \"__main__\":`")
    return f"{where} failed to load: {type(e).__name__}: {e}"
