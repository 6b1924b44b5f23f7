"""What a proxy is: a named, cited scoring rule plus the runs and recorders it needs.

The split between `needs` and `score` is what lets the planner share training runs: proxies never
train anything themselves, they declare run specs and recorders, and read the records back.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from harness.errors import HarnessError
from harness.recorders import RECORDERS, RecorderRequest, RunArrays
from harness.registry import did_you_mean
from harness.runspec import RunSpec
from harness.values import leading_zero_hint

#: Default bound of a proxy's count parameters (draws, folds, epochs between checkpoints): far
#: above any use, so a mistyped 2**40 is refused before training instead of looping inside it.
MAX_COUNT = 10_000


@dataclass(frozen=True)
class Need:
    """One run a proxy reads, and the recorders it must carry."""

    spec: RunSpec
    recorders: frozenset[RecorderRequest]

    def __post_init__(self) -> None:
        """A recorder name or parameter that no registered recorder takes fails here, while the
        experiment is planned: found only when the run started, it failed with a traceback, after
        other runs had trained, a run that other proxies share (the base run)."""
        for request in sorted(self.recorders, key=lambda r: r.key):
            if request.name not in RECORDERS:
                raise HarnessError(f"unknown recorder {request.name!r}{did_you_mean([request.name], RECORDERS)} "
                                   f"requested for run {self.spec.label()}; "
                                   f"registered: {', '.join(sorted(RECORDERS))} (a plugin's recorder must be "
                                   "registered with @register_recorder before the experiment is planned)")
            try:
                inspect.signature(RECORDERS[request.name]).bind(None, **dict(request.params))
            except TypeError as e:
                raise HarnessError(f"recorder {request.key} cannot be built: {e}; pass the parameters "
                                   f"its __init__ takes") from None


@dataclass
class ScoreContext:
    base: RunSpec  # the setting's base run (trained on every sample with the setting's labels)
    labels: np.ndarray  # the labels trained on, canonical order
    num_classes: int
    runs: Mapping[RunSpec, RunArrays]  # a stored run, a tracker's records: anything with .arrays(key)

    def arrays(self, request: RecorderRequest, spec: RunSpec | None = None) -> dict[str, np.ndarray]:
        """The recorder's arrays, read-only: a tracker's records are one set of arrays that every
        proxy (and every later `scores()` call) reads, so a proxy that changed one in place (a
        `loss[loss > 5] = 5`) changed every later proxy's input without a word."""
        arrays = self.runs[spec or self.base].arrays(request.key)
        return RecordedArrays(request.key, {name: _read_only(a) for name, a in arrays.items()})

    def declared(self, proxy: Proxy) -> ScoreContext:
        """This context as `proxy` may read it: only the recorders, on the runs, that its `needs`
        declare. Reading another one worked by accident whenever another selected proxy had asked
        for it (in `--proxies all`): the cost task charged the proxy nothing for it (a proxy reading
        the last eval pass showed 1.00x beside final_loss's 1.09x), and alone it failed."""
        allowed = frozenset((n.spec, r.key) for n in proxy.needs(self.base) for r in n.recorders)
        return DeclaredContext(self.base, self.labels, self.num_classes, self.runs, proxy.label, allowed)


def _read_only(values: np.ndarray) -> np.ndarray:
    """A view of `values` that refuses writes (the records themselves are left as they are)."""
    view = np.asarray(values).view()
    view.flags.writeable = False
    return view


def read_only_hint(e: BaseException) -> str:
    """The fix to add to a proxy's failure when `e` is numpy's refusal to write into the read-only
    arrays `ScoreContext.arrays` hands out (the experiment and the tracker both say it); else ""."""
    wrote = isinstance(e, ValueError) and "read-only" in str(e)
    return " (the recorded arrays are read-only: change a copy, np.array(...))" if wrote else ""


class RecordedArrays(dict):
    """A recorder's arrays by name; a name it does not hold is a KeyError that lists the ones it does
    (a bare `KeyError: 'margin'` left a proxy's author to guess)."""

    def __init__(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(arrays)
        self.key = key

    def __missing__(self, name: str) -> np.ndarray:
        raise KeyError(f"recorder {self.key} holds no array {name!r}; it holds {', '.join(sorted(self))}")


@dataclass
class DeclaredContext(ScoreContext):
    """A ScoreContext that refuses what its proxy did not declare (see `ScoreContext.declared`)."""

    proxy: str = ""
    allowed: frozenset[tuple[RunSpec, str]] = frozenset()

    def arrays(self, request: RecorderRequest, spec: RunSpec | None = None) -> dict[str, np.ndarray]:
        if ((spec or self.base), request.key) not in self.allowed:
            run = "" if spec is None or spec == self.base else f" of run {spec.label()}"
            raise HarnessError(f"proxy {self.proxy} reads {request.key}{run}, which its `recorders`/`needs` do not "
                               "declare: declare it (its cost is not charged, and without it the run lacks it)")
        return super().arrays(request, spec)


def _reads_declared_only(score: Callable[[Proxy, ScoreContext], np.ndarray]) -> Callable[..., np.ndarray]:
    """`score`, handed a context restricted to what the proxy declares (a context already
    restricted, e.g. in a subclass's `super().score(ctx)`, is passed on as it is). Its wall time
    is kept in `self.score_seconds[base]`: the cost columns hold only runs and recorders, and a
    proxy that computes for minutes after training showed 1.00x there."""

    @functools.wraps(score)
    def wrapper(self: Proxy, ctx: ScoreContext) -> np.ndarray:
        if not isinstance(ctx, ScoreContext) or isinstance(ctx, DeclaredContext):
            return score(self, ctx)
        start = time.perf_counter()
        try:
            return score(self, ctx.declared(self))
        finally:
            seconds = vars(self).setdefault("score_seconds", {})  # a subclass's __init__ may skip ours
            seconds[ctx.base] = time.perf_counter() - start

    wrapper.reads_declared_only = True  # type: ignore[attr-defined]
    return wrapper


class UnknownParameter(HarnessError, KeyError):
    """`self.params[key]` with a key that `defaults` does not declare (a typo in `score`)."""

    __str__ = Exception.__str__  # the message, not KeyError's repr of it


class Params(dict):
    """A proxy's parameters: a key not in `defaults` names the proxy and its valid keys, instead of
    a bare `KeyError: 'fractoin'` after every run has trained."""

    def __init__(self, proxy: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.proxy = proxy
        self.read: set[str] = set()  # the keys read so far (`Proxy.__init__` asks which `validate` checked)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __missing__(self, key: str) -> Any:
        raise UnknownParameter(f"proxy {self.proxy!r} reads parameter {key!r}, which its `defaults` do not declare; "
                               f"declared: {', '.join(sorted(self)) or 'none'}")


class Proxy:
    """Subclass, set the class attributes, implement `score`; register with `@register_proxy`.

    `recorders` covers the common case of a proxy that reads the base run only; override `needs`
    for proxies that train runs of their own (SSFT, confident learning).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    citation: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    recorders: ClassVar[tuple[RecorderRequest, ...]] = ()
    #: Parameter sets that `--proxies all` runs beside the defaults (e.g. a released code's variant)
    variants_in_all: ClassVar[tuple[dict[str, Any], ...]] = ()

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise HarnessError(f"proxy {self.name!r} has no parameter(s) {sorted(unknown)}"
                               f"{did_you_mean(sorted(unknown), self.defaults)}; valid: {valid}")
        values = Params(self.name, {**self.defaults, **params})
        self.params: dict[str, Any] = values
        self.score_seconds: dict[RunSpec, float] = {}  # base run -> wall seconds of `score` on it
        self.validate()
        for key in self._unchecked(params, values.read):
            self._check_like_default(key, params[key])

    def _unchecked(self, given: Mapping[str, Any], read: set[str]) -> list[str]:
        """The given parameters no check of the proxy's own looked at: all of them without a
        `validate`, and those its `validate` did not read (one that checked `fraction` let
        `window=2.5` through to `score`, a TypeError after training). A `validate` that reads no
        parameter at all accepts every value as its author decided."""
        if type(self).validate is not Proxy.validate and not read:
            return []
        return [key for key in given if key not in read]

    def _check_like_default(self, key: str, value: Any) -> None:
        """A value of its default's kind (a bool, an int, a number, a str; None: any), so that
        `fraction="0.3"` fails before training, not in `score` after it (a TypeError then)."""
        default = self.defaults[key]
        kinds: tuple[tuple[type, tuple[type, ...], str], ...] = (
            (bool, (bool,), "True or False"), (int, (int,), "an integer"), (float, (int, float), "a number"),
            (str, (str,), "a string"))
        for kind, accepted, words in kinds:
            if isinstance(default, kind):
                if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
                    raise HarnessError(f"{self.name}.{key} must be {words}, as its default {default!r} is (got "
                                       f"{type(value).__name__} {value!r}){_how_to_write(self.name, key, kind, value)}")
                if kind is float:  # h=1 and h=1.0 are one setting, under one label (as `check_number` keeps it)
                    self.params[key] = float(value)  # type: ignore[arg-type]  # an int or a float, checked above
                return

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each subclass's own `score` so that it reads only what it declares."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("score")
        if callable(own) and own is not Proxy.score and not getattr(own, "reads_declared_only", False):
            cls.score = _reads_declared_only(own)  # type: ignore[method-assign]

    def validate(self) -> None:
        """Check `self.params`; raise HarnessError naming the parameter and its valid values.

        Runs in the constructor, i.e. before anything trains, so a bad value costs nothing (a check
        inside `score` would fire only after training). Use the `check_*` helpers below.
        """

    def check_int(self, key: str, minimum: int, maximum: int | None = None) -> int:
        """An integer (a bool is not one) >= minimum and <= maximum (default MAX_COUNT)."""
        value = self.params[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise HarnessError(f"{self.name}.{key} must be an integer >= {minimum} (got {value!r})"
                               f"{_how_to_write(self.name, key, int, value)}")
        maximum = MAX_COUNT if maximum is None else maximum
        if value > maximum:
            raise HarnessError(f"{self.name}.{key} must be at most {maximum} (got {value})")
        return value

    def check_number(self, key: str, low: float, high: float, *, low_open: bool = True,
                     high_open: bool = False) -> float:
        """A finite real number in the interval from low to high (open at either end as told), kept
        as a float: `h=1` and `h=1.0` are one setting, and as an int it labelled itself apart
        (`curvature(h=1)` beside `curvature(h=1.0)`, the same scores under two names)."""
        value = self.params[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (isinstance(value, int) or math.isfinite(value))  # math.isfinite overflows on huge ints
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise HarnessError(f"{self.name}.{key} must be a finite number in {interval} (got {value!r})"
                               f"{_how_to_write(self.name, key, float, value)}")
        self.params[key] = float(value)
        return self.params[key]

    def check_choice(self, key: str, choices: tuple[Any, ...]) -> Any:
        """One of `choices`, matched by type as well as value (True is not 1, 1.0 is not 1)."""
        value = self.params[key]
        if not any(type(value) is type(c) and value == c for c in choices):
            raise HarnessError(f"{self.name}.{key} must be one of {', '.join(map(repr, choices))} (got {value!r})")
        return value

    @property
    def label(self) -> str:
        """`name`, or `name(k=v,...)` for non-default parameters, so variants sit side by side."""
        changed = {k: v for k, v in self.params.items() if v != self.defaults[k]}
        if not changed:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in sorted(changed.items()))})"

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(base, frozenset(self.recorders))]

    def score(self, ctx: ScoreContext) -> np.ndarray:
        raise NotImplementedError


def _how_to_write(name: str, key: str, kind: type, value: Any) -> str:
    """How to write a value of `kind` that was read as another (docs/proxies.md, "A value is read
    as a Python literal"): '' when there is nothing to add."""
    if kind is bool:  # `flag=true` is the text 'true', `flag=1` the integer 1
        return " (write True or False, capitalised)"
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):  # `mode=3`: an int
        return (f"; text that reads as a number needs Python quotes inside the shell's: --proxy-arg "
                f"\"{name}.{key}='{value}'\" or --proxies \"{name}({key}='{value}')\"")
    return leading_zero_hint(value) if kind in (int, float) else ""


def float64_record(values: np.ndarray) -> np.ndarray:
    """A recorder's (E, N) array as float64, for a sum, mean or std over epochs. The records are
    float32, and numpy reduces float32 in float32, adding epoch after epoch: each step rounds, so a
    late loss of 4e-8 added to a CSL of 1.0 vanished, and over 200 epochs the tail of every fitted
    sample was dropped (tests/test_audit_numbers20.py)."""
    return np.asarray(values, dtype=np.float64)


def checked_scores(raw: object, n: int) -> np.ndarray:
    """A proxy's returned scores as a new float64 (n,) array, the one check both the experiment
    (`harness.evaluation.score`) and the tracker (`SampleTracker.scores`) apply, so that a plugin
    behaves the same in both: a torch tensor (any device or float dtype, bf16 too, grad or not)
    is taken as its float64 host copy, as are ints, bools and lists; another shape, or complex or
    non-numeric values, is a ValueError or TypeError (a complex score would lose its imaginary
    part in the cast unnoticed). A pandas Series must be indexed 0..n-1 in order (numpy reads its
    values by position, so a sorted or shuffled one scored samples under other samples' scores),
    and a masked array's masked entries are NaN, "no score" (numpy read the values under the mask).
    The caller names the proxy."""
    if isinstance(raw, torch.Tensor):
        if raw.is_complex():
            raise TypeError(f"it returned {raw.dtype} scores; a proxy returns real numbers")
        raw = raw.detach().to(device="cpu", dtype=torch.float64).numpy()
    _check_pandas_order(raw, n)
    s = np.asarray(raw)
    if s.shape != (n,):
        raise ValueError(f"it returned shape {s.shape}; a proxy returns one score per sample, shape ({n},)")
    if s.dtype.kind not in "biuf":
        raise TypeError(f"it returned {s.dtype} scores; a proxy returns real numbers")
    if isinstance(raw, np.ma.MaskedArray):
        return np.ma.filled(raw.astype(np.float64), np.nan)
    return s.astype(np.float64)  # a copy: callers blank samples in it, never in the proxy's own array


def _check_pandas_order(raw: object, n: int) -> None:
    """A pandas Series of n values whose index is not 0..n-1 in order is refused: its values would
    be read by position, not by the sample each is indexed under."""
    if not type(raw).__module__.startswith("pandas") or getattr(raw, "ndim", 0) != 1:
        return
    if not isinstance(raw, Sized) or len(raw) != n:  # a Series is Sized: the check only narrows the type
        return
    import pandas as pd

    index = getattr(raw, "index", None)
    if index is not None and not index.equals(pd.RangeIndex(n)):
        raise ValueError(f"it returned a pandas Series indexed {list(index[:3])}...; a proxy returns scores in "
                         "sample order: return series.sort_index().to_numpy() if its index is the sample index")
