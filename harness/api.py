"""The harness from Python: `run_experiment(...)` takes the CLI's options as keywords and returns the
leaderboard, raw rows and per-sample scores as DataFrames.

    from harness.api import run_experiment
    result = run_experiment(proxies="csl,aum", tasks="mislabeled", seeds=2, noise_rates=[0.1])
    result.leaderboard      # one row per (task, setting, proxy, metric)
    result.scores           # {"noise=0.1_seed0": per-sample scores, ...}

`run_experiment`'s signature is the one list of options and defaults: the CLI parses argv into a
dict of the flags given and hands it to `experiment_config`, which fills the rest from that
signature, so the two cannot drift (the only difference: the CLI writes to results/latest unless
told otherwise; the API writes files only when `out` is given).
"""

from __future__ import annotations

import ast
import inspect
import numbers
import operator
import os
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import MAX_SEEDS, ExperimentConfig, short_repr
from harness.errors import HarnessError
from harness.presets import preset_for

if TYPE_CHECKING:
    from harness.experiment import ExperimentResult

DEFAULT_NOISE_RATES: tuple[float, ...] = ExperimentConfig.noise_rates


def run_experiment(
    *,
    dataset: str = "digits",
    proxies: str | Sequence[str] = "all",
    tasks: str | Sequence[str] = ExperimentConfig.tasks,
    seeds: int | str | Sequence[int] = 3,
    preset: str = "quick",
    model: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    augment: bool | str | None = None,
    subset: int | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    noise_rates: str | Sequence[float] | None = None,
    duplicate_pairs: int | None = None,
    noisy_labels: str | Path | None = None,
    proxy_args: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None,
    task_args: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None,
    reference: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    store: str | Path | None = None,
    checkpoint_every: float = 120.0,
    threads: int = 1,
    progress: bool = True,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    gpus_per_run: float = 1.0,
    bootstrap: int = 1000,
    overwrite: bool = False,
    precision: str | None = None,
    compile: bool = False,
) -> ExperimentResult:
    """Plan, train (or reuse from `store`), score and evaluate; `python -m harness run` with keywords.

    Options mirror the CLI flags (`--noise-rates` -> `noise_rates`); lists may be Python sequences
    or the CLI's comma strings. `seeds`: a count (3 -> 0, 1, 2) or the seeds themselves.
    `model`, `epochs`, `batch_size`, `lr`, `augment`, `subset`, `precision` default to the preset's.
    `noise_rates` defaults to 0.01, 0.02, 0.05, 0.1 and contradicts `noisy_labels`.
    `proxy_args`/`task_args`: {"curvature": {"n": 2}} or ["curvature.n=2"].
    `reference`: the memorization reference (default stability), only with a task that uses one.
    `out`: None writes nothing (the result holds everything); a folder gets the CLI's files.
    `store`: the run store (default $MEMPROX_CACHE/store or ~/.cache/memprox/store).
    `executor`: local (a pool of `workers` processes, default usable CPUs // `threads`), ray, or
    inprocess (this process, for debugging); `threads`: torch threads of each run (default 1).

    Returns an ExperimentResult: `leaderboard`, `raw` and `scores` (DataFrames), `failures`,
    `trained`, `reused`. Bad input raises HarnessError before anything trains.
    """
    cfg = experiment_config(**locals())  # first statement: locals() are exactly the options
    from harness.experiment import Experiment

    return Experiment(cfg).run()


OPTIONS: Mapping[str, inspect.Parameter] = inspect.signature(run_experiment).parameters
DEFAULTS: dict[str, Any] = {name: p.default for name, p in OPTIONS.items()}
DEFAULT_REFERENCE = "stability"

_PATH = (str, os.PathLike, type(None))
_NAMES = (str, Iterable)
#: The type each option must have before it is parsed (numbers and switches are checked, with their
#: ranges, by ExperimentConfig.validate): a wrong type is bad input, not a TypeError from deep inside.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "dataset": ((str,), "str"),
    "proxies": (_NAMES, "str or list of str"),
    "tasks": (_NAMES, "str or list of str"),
    "seeds": ((numbers.Integral, str, Iterable), "int, str or list of int"),
    "preset": ((str,), "str"),
    "model": ((str, type(None)), "str or None"),
    "augment": ((bool, str, type(None)), "bool, 'on'/'off' or None"),
    "data_root": (_PATH, "str, pathlib.Path or None"),
    "noise_rates": ((str, numbers.Real, Iterable, type(None)), "str, number, list of numbers or None"),
    "noisy_labels": (_PATH, "str, pathlib.Path or None"),
    "proxy_args": ((Mapping, str, Iterable, type(None)), "dict, str, list of str or None"),
    "task_args": ((Mapping, str, Iterable, type(None)), "dict, str, list of str or None"),
    "reference": ((str, type(None)), "str or None"),
    "device": ((str,), "str"),
    "out": (_PATH, "str, pathlib.Path or None"),
    "store": (_PATH, "str, pathlib.Path or None"),
    "executor": ((str,), "str"),
    "ray_address": ((str, type(None)), "str or None"),
    "precision": ((str, type(None)), "str or None"),
}


def experiment_config(**options: Any) -> ExperimentConfig:
    """The validated config `run_experiment(**options)` runs; options not given take its defaults."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise HarnessError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    o = {**DEFAULTS, **options}
    for name, (types, expected) in _TYPES.items():
        if not isinstance(o[name], types) or isinstance(o[name], bytes):
            raise HarnessError(f"{name} must be {expected} (got {type(o[name]).__name__} {short_repr(o[name])})")
    if o["noisy_labels"] is not None and o["noise_rates"] is not None:
        raise HarnessError("--noisy-labels replaces --noise-rates; pass one of them")
    preset = preset_for(o["preset"], o["dataset"])
    recipe = preset.recipe
    if o["epochs"] is not None:
        epochs = o["epochs"]
        kept = tuple(m for m in recipe.milestones if isinstance(epochs, int) and m < epochs)
        recipe = replace(recipe, epochs=epochs, milestones=kept)
    if o["batch_size"] is not None:
        recipe = replace(recipe, batch_size=o["batch_size"])
    if o["lr"] is not None:
        recipe = replace(recipe, lr=o["lr"])
    if o["augment"] is not None:
        recipe = replace(recipe, augment=_switch(o["augment"], "augment"))
    if o["precision"] is not None:  # numerics belong to the run's address, hence to the recipe
        recipe = replace(recipe, precision=o["precision"])
    if o["noisy_labels"] is not None:
        noise_rates: tuple[float, ...] = ()
    elif o["noise_rates"] is None:
        noise_rates = DEFAULT_NOISE_RATES
    else:
        noise_rates = _floats(o["noise_rates"], "--noise-rates")
    cfg = ExperimentConfig(
        dataset=o["dataset"], model=o["model"] if o["model"] is not None else preset.model, recipe=recipe,
        preset=preset.name, subset=o["subset"] if o["subset"] is not None else preset.subset,
        data_root=_path(o["data_root"], "data_root"),
        download=o["download"], seeds=_seeds(o["seeds"]), tasks=_names(o["tasks"], "--tasks"),
        proxies=_selection(o["proxies"]), proxy_args=_key_values(o["proxy_args"], "--proxy-arg"),
        task_args=_key_values(o["task_args"], "--task-arg"), noise_rates=noise_rates,
        duplicate_pairs=o["duplicate_pairs"],
        noisy_labels=str(o["noisy_labels"]) if o["noisy_labels"] is not None else None,
        reference=o["reference"] if o["reference"] is not None else DEFAULT_REFERENCE, device=o["device"],
        out=_path(o["out"], "out"), store=_path(o["store"], "store"),
        progress=o["progress"], checkpoint_every_s=o["checkpoint_every"], threads=o["threads"],
        executor=o["executor"], workers=o["workers"], ray_address=o["ray_address"],
        gpus_per_run=o["gpus_per_run"], bootstrap=o["bootstrap"], overwrite=o["overwrite"],
        precision=recipe.precision, compile=o["compile"],
    )
    cfg.validate()
    _check_used(o, cfg)
    return cfg


def _check_used(options: Mapping[str, Any], cfg: ExperimentConfig) -> None:
    """An option that no selected task reads would be ignored silently, and the experiment would
    look as if it had used it: refuse it, naming the tasks that would. (Unknown task names are
    left to make_tasks, whose message lists the valid ones.)"""
    from harness.tasks import TASKS

    if not all(name in TASKS for name in cfg.tasks):
        return
    for flag, option, user in (("--noisy-labels", "noisy_labels", "mislabeled"),
                               ("--noise-rates", "noise_rates", "mislabeled"),
                               ("--duplicate-pairs", "duplicate_pairs", "duplicates")):
        if options[option] is not None and user not in cfg.tasks:
            raise HarnessError(f"{flag} is used only by the {user} task; add it to --tasks or drop {flag}")
    if options["reference"] is not None:
        users = [name for name, task in TASKS.items() if task.uses_reference]
        if not set(users) & set(cfg.tasks):
            raise HarnessError(f"--reference is used only by the {_words(users)} task{'s' * (len(users) > 1)}; "
                               "add one to --tasks or drop --reference")


def _words(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _path(value: str | os.PathLike | None, name: str) -> Path | None:
    """A path option; "" would silently mean the current folder."""
    if value is None:
        return None
    try:
        path = Path(value)
    except TypeError as e:  # a PathLike whose fspath is bytes
        raise HarnessError(f"{name} must be a str or pathlib.Path path (got {short_repr(value)})") from e
    if not str(value).strip():
        raise HarnessError(f"{name} is an empty path; pass a folder (--{name.replace('_', '-')} PATH)")
    return path


def _switch(value: bool | str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("on", "off"):
        return value == "on"
    raise HarnessError(f"{name} takes on/off or True/False (got {value!r})")


def _floats(value: str | Sequence[float], flag: str) -> tuple[float, ...]:
    if isinstance(value, str):
        try:
            return tuple(float(t) for t in value.split(",") if t.strip())
        except ValueError as e:
            raise HarnessError(f"{flag} takes comma-separated numbers, got {short_repr(value)}") from e
    if isinstance(value, numbers.Real):
        value = [value]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise HarnessError(f"{flag} takes numbers, got {short_repr(value)}")
    return tuple(float(v) for v in value)


def _seeds(value: int | str | Sequence[int]) -> tuple[int, ...]:
    """3 means seeds 0, 1, 2; '0,5' or [0, 5] means exactly those seeds."""
    fix = "--seeds takes a count (3) or a list (0,5)"
    try:
        if isinstance(value, str):
            parts = [t for t in value.split(",") if t.strip()]
            if "," in value:
                return tuple(int(t) for t in parts)
            value = int(value)
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, numbers.Integral):
            if value < 1:
                raise HarnessError(f"{fix}; a count must be >= 1 (got {value})")
            _count_seeds(value)  # before range() makes a tuple of that length
            return tuple(range(int(value)))
        if isinstance(value, Sized):
            _count_seeds(len(value))
        if any(isinstance(v, bool) for v in value):
            raise TypeError
        return tuple(operator.index(v) for v in value)
    except (TypeError, ValueError, OverflowError) as e:
        raise HarnessError(f"{fix}, got {short_repr(value)}") from e


def _count_seeds(count: int) -> None:
    if count > MAX_SEEDS:
        raise HarnessError(f"--seeds gives {count} seeds; at most {MAX_SEEDS} are allowed (each seed trains runs of "
                           "its own)")


def _names(value: str | Sequence[str], flag: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{flag} takes names, got {short_repr(value)}")
    return tuple(value)


def _selection(value: str | Sequence[str]) -> str:
    """Proxies as the selection string the registry parses ('csl,curvature(n=2)')."""
    return value if isinstance(value, str) else ",".join(_names(value, "--proxies"))


def _key_values(value: Mapping[str, Mapping[str, Any]] | Sequence[str] | None, flag: str) -> dict[str, dict[str, Any]]:
    """['curvature.n=2', ...] (values as Python literals) or {'curvature': {'n': 2}}."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {owner: dict(params) if isinstance(params, Mapping) else params for owner, params in value.items()}
    if isinstance(value, str):
        value = [value]
    out: dict[str, dict[str, Any]] = {}
    for item in value:
        name, sep, text = str(item).partition("=")
        owner, dot, key = name.strip().partition(".")
        if not sep or not dot or not owner or not key:
            raise HarnessError(f"{flag} takes NAME.PARAM=VALUE (e.g. curvature.n=2), got {item!r}")
        try:
            parsed: Any = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a literal: the text
            parsed = text.strip()
        params = out.setdefault(owner, {})
        if key in params:
            raise HarnessError(f"{flag} sets {owner}.{key} twice; pass it once")
        params[key] = parsed
    return out
