"""The harness from Python: `run_experiment(...)` takes the CLI's options as keywords and returns the
leaderboard, raw rows and per-sample scores as DataFrames.

    from harness.api import run_experiment
    result = run_experiment(proxies="csl,aum", tasks="mislabeled", seeds=2, noise_rates=[0.1])
    result.leaderboard      # one row per (task, setting, proxy, metric)
    result.scores           # {"noise=0.1_seed0": per-sample scores, ...}

The option table (`harness.options.OPTIONS`) is the one list of options and defaults: its keywords
are `run_experiment`'s, and the CLI parses argv into a dict of the flags given and hands it to
`build_config`, which fills the rest from the table, so the two cannot drift (the only
differences: the CLI writes to results/latest unless told otherwise, the API writes files only when
`out` is given; and the API's errors name its keywords, `epochs`, where the CLI's name `--epochs`).
"""

from __future__ import annotations

import difflib
import faulthandler
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import config as _config
from harness.api_wording import keyword_errors, keyword_warnings
from harness.config import ExperimentConfig
from harness.console import drop_bad_thread_counts
from harness.errors import HarnessError
from harness.options import DEFAULT_NOISE_RATES, DEFAULT_REFERENCE, Context, Option, keyword_options, table
from harness.presets import preset_for
from harness.values import short_repr

if TYPE_CHECKING:
    from harness.experiment import ExperimentResult

__all__ = ["DEFAULT_NOISE_RATES", "DEFAULT_REFERENCE", "defaults", "experiment_config", "keywords",
           "run_experiment"]


def run_experiment(**options: Any) -> ExperimentResult:
    """Plan, train (or reuse from `store`), score and evaluate; `python -m harness run` with keywords.

    Options mirror the CLI flags (`--noise-rates` -> `noise_rates`); lists may be Python sequences
    or the CLI's comma strings. `seeds`: a count (3 -> 0, 1, 2) or the seeds themselves.
    `model`, `epochs`, `batch_size`, `lr`, `augment`, `subset`, `precision` default to the preset's.
    `noise_rates` defaults to 0.01, 0.02, 0.05, 0.1 and contradicts `noisy_labels`.
    `proxy_args`/`task_args`: {"curvature": {"n": 2}} or ["curvature.n=2"].
    `reference`: the memorization reference (default stability), only with a task that uses one.
    `out`: None writes nothing (the result holds the leaderboard, raw rows, per-sample scores and
    the tasks' own tables, by file name: `result.tables["suspects/suspects_seed0.csv"]`,
    "suspects/duplicates.csv", the reference's and the privacy task's per-sample tables; only the
    figures exist in a folder alone); a folder gets the CLI's files.
    `store`: the run store (default $MEMPROX_CACHE/store or ~/.cache/memprox/store).
    `executor`: local (a pool of `workers` processes, default usable CPUs // `threads`), ray, or
    inprocess (this process, for debugging); `threads`: torch threads of each run (default 1).
    This process is left as it was (`host_state_kept`): its torch thread count, its torch, numpy
    and Python RNG states, the environment variables runs set (Ray's, `LEFT_BY_RUNS`), `sys.excepthook`
    and faulthandler are restored when the call returns or fails. Its torch settings do not reach the runs: inside the
    call torch has a fresh process's defaults (`torch_defaults`: grad mode, float32, ...).

    Returns an ExperimentResult: `leaderboard`, `raw`, `scores` and `tables` (DataFrames), `failures`,
    `trained`, `reused`, `outputs` (with `out`: every file written, by kind). Bad input raises
    HarnessError, naming these keywords, before anything trains. Ctrl-C raises
    `harness.errors.Interrupted`, a KeyboardInterrupt (an `except Exception` does not catch it),
    once the runs trained so far are stored: the same call again resumes. A write after training that
    fails, or the near-duplicate search refused after training for want of memory
    (`harness.search_memory.SearchOutOfMemory`, whose `store` names the store), raises
    `harness.errors.StorageError`: the trained runs stay in the store and the same call again reuses them.
    """
    with host_state_kept(), keyword_errors(), keyword_warnings():  # the imports too: a library may draw from `random`
        drop_bad_thread_counts()  # named, and kept from processes started here (put back after: host_state_kept)
        cfg = build_config(**options)
        from harness.experiment import Experiment

        result = Experiment(cfg).run()
    if result.failures:  # the CLI lists them and exits 1; a notebook would see only a shorter leaderboard
        more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        warnings.warn(f"run_experiment: {result.failures[0]}{more}; the leaderboard leaves those out, "
                      "result.failures lists every one", RuntimeWarning, stacklevel=2)
    return result


@contextmanager
def host_state_kept() -> Iterator[None]:
    """The caller's process as it was: a notebook that calls `run_experiment` and then trains a
    model of its own must not find its torch thread count set to the runs' `threads` (1 by
    default) nor its RNGs reseeded by the runs `executor="inprocess"` trains here (each seeds
    torch with its run's seed). Torch's CPU and CUDA generators, numpy's and Python's global
    RNG and torch's intra-op threads are put back, also when the run fails; so are what
    `ray.init` leaves after `ray.shutdown` (`executor="ray"`): environment variables (its
    PYTHONBREAKPOINT sent the notebook's own `breakpoint()` to Ray's debugger), its
    `sys.excepthook` and faulthandler, which it enables. Data prepared on a GPU is let go
    (`release_device_data`): the notebook's GPU memory is its own again."""
    import torch

    from harness.jobs import release_device_data
    from harness.rngs import global_rngs_kept

    threads, seed = torch.get_num_threads(), torch.initial_seed()
    cuda_was_up = torch.cuda.is_initialized()  # not initialised here: a worker pool must not inherit CUDA
    try:
        with global_rngs_kept(range(torch.cuda.device_count()) if cuda_was_up else []), process_hooks_kept(), \
                torch_defaults():
            yield
    finally:
        torch.set_num_threads(threads)
        release_device_data()
        if not cuda_was_up and torch.cuda.is_available():  # CUDA's generators start from the CPU seed, as before
            torch.cuda.manual_seed_all(seed)


@contextmanager
def torch_defaults() -> Iterator[None]:
    """Torch as a fresh process has it inside the block, the caller's settings back after: a notebook's
    `torch.no_grad()` or `inference_mode()` around the call, `set_default_dtype(torch.float64)`,
    `set_default_device`, `torch.autocast(...)`, `use_deterministic_algorithms(True)`, anomaly detection,
    `set_float32_matmul_precision("high")`, `cudnn.benchmark` or cuDNN/oneDNN switched off reached the
    runs `executor="inprocess"` trains here (and the model check every executor runs here): a
    RuntimeError, a "cannot take the samples" refusal of a model that can, or numbers other than a
    worker process's, whose torch has its defaults. Only a setting that differs is touched
    (`use_deterministic_algorithms` imports torch's inductor, hundreds of modules)."""
    import torch

    undo: list[Callable[[], object]] = []  # each puts one of the caller's settings back
    # `set_default_device("cuda")` or a `with torch.device("cuda")` around the call: the innermost wins
    device = torch.device("cpu") if torch.get_default_device().type != "cpu" else nullcontext()
    try:
        if (dtype := torch.get_default_dtype()) != torch.float32:
            torch.set_default_dtype(torch.float32)
            undo.append(lambda: torch.set_default_dtype(dtype))
        if torch.are_deterministic_algorithms_enabled():
            warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
            torch.use_deterministic_algorithms(False)
            undo.append(lambda: torch.use_deterministic_algorithms(True, warn_only=warn_only))
        if torch.is_anomaly_enabled():
            check_nan = torch.is_anomaly_check_nan_enabled()
            torch.set_anomaly_enabled(False)
            undo.append(lambda: torch.set_anomaly_enabled(True, check_nan))
        if (matmul := torch.get_float32_matmul_precision()) != "highest":
            torch.set_float32_matmul_precision("highest")
            undo.append(lambda: torch.set_float32_matmul_precision(matmul))
        if (cudnn := (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)) != (False, False):
            torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = False
            undo.append(lambda: setattr(torch.backends.cudnn, "benchmark", cudnn[0]))
            undo.append(lambda: setattr(torch.backends.cudnn, "deterministic", cudnn[1]))
        # switched off by a notebook, convolutions take other kernels: other numbers than a worker's
        for backend, flag in ((torch.backends.cudnn, "enabled"), (torch.backends.cudnn, "allow_tf32"),
                              (torch.backends.mkldnn, "enabled")):
            if not getattr(backend, flag):
                setattr(backend, flag, True)
                undo.append(partial(setattr, backend, flag, False))
        with device, torch.inference_mode(False), torch.enable_grad(), ExitStack() as autocast_off:
            for kind in _autocast_devices():  # a `with torch.autocast(...)` around the call: fp32 runs trained in
                autocast_off.enter_context(torch.autocast(device_type=kind, enabled=False))  # bf16, stored as fp32
            yield
    finally:
        for step in reversed(undo):
            step()


#: The environment variables a run sets in this process: `ray.init` (PYTHONBREAKPOINT on Ray's debugger,
#: RAY_USAGE_STATS_ENABLED, RAY_CLIENT_MODE, RAY_AUTH_MODE), scikit-learn's import (KMP_*), the thread
#: sizes a worker sets, and TORCHINDUCTOR_CACHE_DIR, which torch's inductor sets to its default folder the
#: first time a process asks for it (torch sets it again where the notebook needs it). Only these are put
#: back: any other was set by the caller's own code during the call (a plugin, a callback, another thread of
#: the notebook), on purpose, and stays.
LEFT_BY_RUNS = re.compile(r"PYTHONBREAKPOINT|RAY_.*|KMP_.*|(?:OMP|MKL|OPENBLAS)_NUM_THREADS|TORCHINDUCTOR_CACHE_DIR")


def _autocast_devices() -> list[str]:
    """The device types whose autocast the caller has on (thread-local, like grad mode)."""
    import torch

    def on(kind: str) -> bool:
        try:
            return bool(torch.is_autocast_enabled(kind))
        except TypeError:  # torch < 2.4 takes no device type: the CUDA one, and the CPU's apart
            return torch.is_autocast_cpu_enabled() if kind == "cpu" else kind == "cuda" and torch.is_autocast_enabled()
        except (RuntimeError, ValueError):  # a device type this torch does not know
            return False

    return [kind for kind in ("cpu", "cuda", "mps", "xpu") if on(kind)]


@contextmanager
def process_hooks_kept() -> Iterator[None]:
    """The variables a run sets (`LEFT_BY_RUNS`), `sys.excepthook` and faulthandler's state as before the
    block, also when it raises. KMP_* that scikit-learn sets when imported inside go too: each is read
    when a library loads, which has happened, and a worker process sets them again when it imports it."""
    environ, hook, faulting = dict(os.environ), sys.excepthook, faulthandler.is_enabled()
    try:
        yield
    finally:
        for name in [n for n in os.environ if n not in environ and LEFT_BY_RUNS.fullmatch(n)]:
            del os.environ[name]
        for name, value in environ.items():
            if os.environ.get(name) != value and LEFT_BY_RUNS.fullmatch(name):
                os.environ[name] = value
        sys.excepthook = hook
        if not faulting and faulthandler.is_enabled():
            faulthandler.disable()


def keywords() -> list[str]:
    """The keywords `run_experiment` and `experiment_config` accept, in the table's order."""
    return list(keyword_options())


def defaults() -> dict[str, Any]:
    """Each keyword's default (None: the preset's, or derived from other options)."""
    return {name: option.default for name, option in keyword_options().items()}


def _signature() -> inspect.Signature:
    return inspect.Signature([inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                              for name, default in defaults().items()],
                             return_annotation="ExperimentResult")


def _options_doc() -> str:
    lines = ["", "    Options (from `harness.options.OPTIONS`): keyword = default (the CLI flag: its help)", ""]
    for name, option in keyword_options().items():
        text = option.help() if callable(option.help) else option.help
        lines.append(f"    - `{name}` = {option.default!r} ({option.flag}: {text})")
    return "\n".join(lines) + "\n"


run_experiment.__signature__ = _signature()  # type: ignore[attr-defined]  # help() and IDEs list the keywords
run_experiment.__doc__ = (run_experiment.__doc__ or "") + _options_doc()


def experiment_config(**options: Any) -> ExperimentConfig:
    """The validated config `run_experiment(**options)` runs; options not given take their defaults.
    Errors name keywords (`build_config` is the same, naming the CLI's flags)."""
    with keyword_errors(), keyword_warnings():
        return build_config(**options)


def build_config(**options: Any) -> ExperimentConfig:
    """The config from options given as keywords, its errors naming the CLI's flags (the CLI's builder).

    Every step reads the option table: unknown keywords (with close matches), each keyword's type,
    options that replace others, then the preset; each given value is parsed (`Option.parse`), the
    recipe options change the preset's recipe (`into_recipe`), each field is filled (`fill`: the
    preset's model, the recipe, ...), and the config is validated once. Last, an option that no
    selected task reads (`used_by`) is refused."""
    by_keyword = keyword_options()
    _refuse_unknown(options, list(by_keyword))
    given = {by_keyword[k].name: _plain(v) for k, v in options.items()}
    values = {o.name: given.get(o.name, o.default) for o in by_keyword.values()}
    for option in by_keyword.values():
        _check_type(option, values[option.name])
    for option in by_keyword.values():
        if option.replaces and values[option.name] is not None and values[option.replaces] is not None:
            replaced = next(o for o in table() if o.name == option.replaces)
            raise HarnessError(f"{option.flag} replaces {replaced.flag}; pass one of them")
    preset = preset_for(values["preset"], values["dataset"])
    parsed = {o.name: o.parse(values[o.name]) if o.parse and values[o.name] is not None else values[o.name]
              for o in by_keyword.values()}
    recipe = preset.recipe
    for option in by_keyword.values():
        if option.into_recipe is not None and parsed[option.name] is not None:
            recipe = option.into_recipe(recipe, parsed[option.name])
    context = Context(preset, recipe, parsed)
    fields = {}
    for option in table():
        if option.field:
            value = parsed.get(option.name)
            fields[option.name] = option.fill(context, value) if option.fill else value
    cfg = _config.config_class()(**fields)
    cfg.validate()
    _check_used(values, cfg)
    if values["overwrite"] and values["out"] is None:  # the CLI always has an --out (results/latest)
        raise HarnessError("--overwrite lets --out replace a folder another experiment wrote, and no --out is given "
                           "(nothing is written); pass --out PATH or drop --overwrite")
    return cfg


def _plain(value: Any) -> Any:
    """numpy scalars (a value read from an array: epochs=np.int64(3)) and arrays as the Python
    numbers and lists they hold, so they pass the same checks and hash to the same experiment. A
    float32 is the decimal it prints as (np.float32(0.1) -> 0.1, not 0.10000000149011612: another
    experiment, named noise=0.10000000149011612); an iterator (a generator) becomes a tuple, read
    once (the checks would consume it and leave parsing nothing: "needs noise rates"); dicts
    (proxy_args) are converted value by value."""
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _plain(value[()] if value.ndim == 0 else list(value))
    if isinstance(value, Iterator):
        value = tuple(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):  # proxy_args / task_args: {"curvature": {"n": np.int64(2)}}
        return {k: _plain(v) for k, v in value.items()}
    return value


def _refuse_unknown(options: Mapping[str, Any], valid: list[str]) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        named = [f"{name} (did you mean {' or '.join(close)}?)" if (close := difflib.get_close_matches(name, valid))
                 else name for name in unknown]
        raise HarnessError(f"unknown option(s) {', '.join(named)}; valid: {', '.join(valid)}")


def _check_type(option: Option, value: Any) -> None:
    """A wrong type is bad input, not a TypeError from deep inside (numbers and switches are checked,
    with their ranges, by ExperimentConfig.validate)."""
    if option.types and (not isinstance(value, option.types) or isinstance(value, bytes)):
        raise HarnessError(f"{option.keyword} must be {option.type_words} (got {type(value).__name__} "
                           f"{short_repr(value)})")


def _check_used(values: Mapping[str, Any], cfg: ExperimentConfig) -> None:
    """An option that no selected task reads would be ignored silently, and the experiment would
    look as if it had used it: refuse it, naming the tasks that would. (Unknown task names are
    left to make_tasks, whose message lists the valid ones.)"""
    from harness.tasks import TASKS

    if not all(name in TASKS for name in cfg.tasks):
        return
    for option in table():
        if not option.used_by or values.get(option.name) is None:
            continue
        users = list(option.used_by() if callable(option.used_by) else option.used_by)
        if not set(users) & set(cfg.tasks):
            raise HarnessError(f"{option.flag} is used only by the {_words(users)} task{'s' * (len(users) > 1)}; "
                               f"add {'it' if len(users) == 1 else 'one'} to --tasks or drop {option.flag}")


def _words(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
