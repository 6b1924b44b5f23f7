"""The option table: every experiment option declared once.

An `Option` says everything about one option: its name (the `ExperimentConfig` field), the
`run_experiment` keyword and the CLI flag (both derived from the name unless given), its type and
default, its help text, how a CLI string or Python value becomes the config's value, its check, and
whether it is a runtime option (how or where an experiment runs, not what it computes: outside the
experiment's identity). From `OPTIONS` are generated:

- `ExperimentConfig`'s fields (`harness.config.config_class`),
- `run_experiment`'s keywords, their type checks and defaults (`harness.api`),
- the `run` command's flags and their --help (`harness.cli.build_parser`),
- `ExperimentConfig.validate()`: each option's `check`, in table order, once per config,
- the experiment identity (`harness.config.experiment_id`: every field but the runtime ones).

Adding an option is one entry here (and reading it where it acts). Checks spanning several options
(mislabeled needs noise rates, the precision agrees with the recipe) live in `ExperimentConfig.validate`,
executor options' in `harness.executors.validate_executor`, task and proxy parameters' in their constructors.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from harness.errors import HarnessError
from harness.precision import PRECISIONS
from harness.presets import PRESETS, Preset
from harness.recipe import Recipe
from harness.runspec import Corruption
from harness.values import (
    MAX_BATCH_SIZE,
    MAX_BOOTSTRAP,
    MAX_EPOCHS,
    MAX_LR,
    MAX_NOISE_RATES,
    MAX_SEED,
    MAX_SEEDS,
    MAX_THREADS,
    MIN_GPUS_PER_RUN,
    MIN_LR,
    check_count,
    check_integer,
    check_number,
    check_unique,
    parse_dataset,
    parse_floats,
    parse_key_values,
    parse_names,
    parse_path,
    parse_seeds,
    parse_selection,
    parse_switch,
    short_repr,
)

_SAME = object()  # Option.field_default: the same as the keyword's default


class Context(NamedTuple):
    """What an option's `fill` may read: the preset, the recipe after the recipe options, and every
    keyword's value (by option name, parsed; None: neither given nor defaulted)."""

    preset: Preset
    recipe: Recipe
    given: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Option:
    """One experiment option: everything the config, the API, the CLI, validation and the identity
    need to know about it (see the module docstring). `eq=False`: entries compare by identity, so a
    table is hashable whatever its defaults are."""

    name: str  # the ExperimentConfig field (or, with field=False, the keyword)
    default: Any = None  # run_experiment's default; None: not given (then `fill` decides)
    help: str | Callable[[], str] = ""  # --help text; "" hides the option from the CLI
    annotation: str = "Any"  # the config field's type, as written in a class body
    field_default: Any = _SAME  # the field's default in a hand-built ExperimentConfig, if not `default`
    factory: Callable[[], Any] | None = None  # the field's default_factory (a mutable default)
    types: tuple[type, ...] = ()  # what run_experiment accepts before parsing (() = anything)
    type_words: str = ""  # the same in words, for the message
    parse: Callable[[Any], Any] | None = None  # a given value -> the config's
    fill: Callable[[Context, Any], Any] | None = None  # (context, parsed value or None) -> the config's
    into_recipe: Callable[[Recipe, Any], Recipe] | None = None  # a given value changes the recipe
    read: Callable[[Any], Any] | None = None  # field=False: where validate() finds the value in a config
    check: Callable[[Any, Option], None] | None = None  # raise HarnessError for a bad config value
    runtime: bool = False  # how or where it runs, not what: outside the experiment's identity
    field: bool = True  # an ExperimentConfig field (False: it only feeds another, e.g. the recipe)
    keyword: str | None = ""  # run_experiment's keyword: "" = name, None = none (config only)
    flag: str = ""  # the CLI flag: "" = --keyword-with-dashes
    cli_type: Callable[[str], Any] | None = None  # argparse's type
    cli_default: Any = None  # the CLI's default, where it differs from the API's
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None  # the CLI's choices
    switch: Any = None  # the flag takes no value and stores this
    repeat: bool = False  # the flag may repeat; its values are collected in a list
    metavar: str | None = None
    shown_default: Any = None  # the default as --help words it, where `default` does not say
    used_by: tuple[str, ...] | Callable[[], Sequence[str]] = ()  # the only tasks that read it
    replaces: str = ""  # the option (by name) this one replaces: giving both is an error

    def __post_init__(self) -> None:
        if self.keyword == "":
            object.__setattr__(self, "keyword", self.name)
        if not self.flag and self.keyword:
            object.__setattr__(self, "flag", "--" + self.keyword.replace("_", "-"))

    def value_in(self, cfg: Any) -> Any:
        return getattr(cfg, self.name) if self.field else self.read(cfg) if self.read else None

    def make_default(self) -> Any:
        """The field's default for a hand-built config (a fresh object for a mutable one)."""
        return self.factory() if self.factory else self.default if self.field_default is _SAME else self.field_default


# the checks the table refers to -----------------------------------------------------------------
def _integer(what: str, minimum: int, maximum: int | None = None, fix: str = "", optional: bool = False):
    return lambda value, opt: None if optional and value is None else check_integer(
        value, what, opt.flag, minimum=minimum, maximum=maximum, fix=fix)


def _number(what: str, maximum: float = float("inf"), minimum: float = 0.0):
    return lambda value, opt: check_number(value, what, opt.flag, maximum=maximum, minimum=minimum)


def _boolean(value: Any, opt: Option) -> None:
    if not isinstance(value, bool):
        raise HarnessError(f"{opt.name} must be True or False (got {value!r})")


def _path_or_none(value: Any, opt: Option) -> None:
    if value is not None and not isinstance(value, Path):
        raise HarnessError(f"{opt.name} must be a pathlib.Path or None (got {type(value).__name__} {value!r})")


def _named(what: str, fix: str):
    def check(value: Any, opt: Option) -> None:
        if not isinstance(value, str) or not value.strip():
            raise HarnessError(f"{opt.name} must be {what} (got {value!r}); {fix}")
    return check


def _proxies(value: Any, opt: Option) -> None:
    if not isinstance(value, str) or not value.strip():
        raise HarnessError("no proxies selected; pass --proxies all or a comma-separated list")


def _tasks(value: Any, opt: Option) -> None:
    if not value:
        raise HarnessError("no tasks selected; pass e.g. --tasks mislabeled,duplicates")
    check_unique(value, "task", opt.flag)


def _seeds(value: Any, opt: Option) -> None:
    if not value:
        raise HarnessError("no seeds given; pass a count (--seeds 3) or a list (--seeds 0,5)")
    check_count(len(value), MAX_SEEDS, "seeds", opt.flag, "each seed trains runs of its own")
    for seed in value:
        check_integer(seed, "seed", opt.flag, minimum=0, maximum=MAX_SEED)
    check_unique(value, "seed", opt.flag)


def _noise_rates(value: Any, opt: Option) -> None:
    """Open (0, 1): a rate of 0 flips no label (no positives to detect), 1 is not a rate."""
    check_count(len(value), MAX_NOISE_RATES, "noise rates", opt.flag, "each rate trains runs of its own")
    for rate in value:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
            raise HarnessError(f"noise rate {rate!r} is outside (0, 1); pass rates like --noise-rates 0.01,0.1 "
                               "(a clean run needs no noise rate)")
    check_unique(value, "noise rate", opt.flag)
    labels: dict[str, float] = {}
    for rate in value:  # a setting is named noise=<rate:g>: two rates with one name would be one setting
        name = Corruption(kind="noise", rate=rate).label()
        if name in labels:
            raise HarnessError(f"noise rates {labels[name]!r} and {rate!r} are both named {name} in outputs (6 "
                               f"significant digits), so their results would merge; pass rates that differ there")
        labels[name] = rate


def _noisy_labels(value: Any, opt: Option) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise HarnessError(f"--noisy-labels must name a file (got {value!r}); pass FILE.npy or FILE.npz[:KEY]")
    _utf8(value, opt)


def _utf8(value: Any, opt: Option) -> None:
    """A path named in outputs is text: LC_ALL=C, PYTHONUTF8=0 kept UTF-8 as surrogates (planning's traceback)."""
    if isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value):
        from harness.datasets.base import not_utf8  # torch and the loaders: only on this error
        raise not_utf8(f"{opt.flag} {value!r}", value, "rename the file (e.g. with convmv -f latin1 -t utf8)")


def _owner_params(value: Any, opt: Option) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) and all(
            isinstance(p, str) for p in v) for k, v in value.items()):
        raise HarnessError(f"{opt.flag} must map NAME -> {{PARAM: VALUE}} (got {value!r})")


def _reference(value: Any, opt: Option) -> None:
    if not isinstance(value, str):
        raise HarnessError(f"reference must be stability, fz:PATH or cscore:PATH (got {value!r}); fix --reference")
    _utf8(value, opt)


def _executor(value: Any, opt: Option) -> None:
    if not isinstance(value, str) or not value:
        raise HarnessError(f"executor must be a name such as local or ray (got {short_repr(value)})")


def _gpus(value: Any, opt: Option) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_GPUS_PER_RUN <= value <= 1.0:
        raise HarnessError(f"GPUs per run must be in [{MIN_GPUS_PER_RUN:g}, 1] (got {value!r}): a run trains on one "
                           "device; pass e.g. --gpus-per-run 0.25 to pack four runs on a GPU")


def _precision(value: Any, opt: Option) -> None:
    if value not in PRECISIONS:
        raise HarnessError(f"unknown precision {value!r}; valid: {', '.join(PRECISIONS)}")


def _recipe(value: Recipe, opt: Option) -> None:
    value.validate()  # after the epochs, batch size and lr entries, whose messages name their flags


# how given values become the config's ------------------------------------------------------------
def _preset_or(attribute: str):
    return lambda ctx, value: getattr(ctx.preset, attribute) if value is None else value


def _into(field: str):
    return lambda recipe, value: replace(recipe, **{field: value})


def _epochs_into(recipe: Recipe, epochs: Any) -> Recipe:
    """A preset's lr milestones scale with the epochs, as its cosine and one-cycle schedules do (the
    paper's 120/180 of 200 epochs are 60/90 of 100): cutting the ones past the new end instead left
    `--preset paper --epochs 100` at a constant lr. Its augment epochs are cut to the new end."""
    kept: tuple[int, ...] = ()
    if isinstance(epochs, int) and not isinstance(epochs, bool) and recipe.milestones:
        scaled = (round(m * epochs / recipe.epochs) for m in recipe.milestones)
        kept = tuple(sorted({m for m in scaled if 1 <= m < epochs}))
    cut = recipe.augment_epochs is not None and isinstance(epochs, int)
    augment_epochs = min(recipe.augment_epochs, epochs) if cut else recipe.augment_epochs
    return replace(recipe, epochs=epochs, milestones=kept, augment_epochs=augment_epochs)


def _augment_into(recipe: Recipe, augment: Any) -> Recipe:
    """Augmentation off also drops a preset's augment epochs (nothing left to stop)."""
    return replace(recipe, augment=augment, augment_epochs=recipe.augment_epochs if augment else None)


def _reference_users() -> list[str]:
    from harness.tasks import TASKS

    return [name for name, task in TASKS.items() if task.uses_reference]


def _executor_names() -> list[str]:
    from harness.executors import executor_names

    return executor_names()


DEFAULT_TASKS = ("mislabeled", "duplicates", "cost", "memorization", "theory", "privacy")
DEFAULT_NOISE_RATES = (0.01, 0.02, 0.05, 0.10)
DEFAULT_REFERENCE = "stability"
_PATH: dict[str, Any] = dict(types=(str, os.PathLike, type(None)), type_words="str, pathlib.Path or None")
_NAMES: dict[str, Any] = dict(types=(str, Sequence), type_words="str or list of str")  # not a set: order varies
_FROM_PRESET: dict[str, Any] = dict(shown_default="the preset's")
_PARAMS: dict[str, Any] = dict(types=(Mapping, str, Iterable, type(None)), type_words="dict, str, list of str or None",
               annotation="dict[str, dict[str, Any]]", factory=dict, fill=lambda ctx, value: {} if value is None
               else value, check=_owner_params, repeat=True)


def _path(name: str, help: str, **kwargs: Any) -> Option:
    """A folder option: None or a non-empty path."""
    return Option(name, None, help, annotation="Path | None", parse=lambda v: parse_path(v, name),
                  check=_path_or_none, **_PATH, **kwargs)


#: Every experiment option, in run_experiment's keyword order (also the order of --help).
OPTIONS: tuple[Option, ...] = (
    Option("dataset", "digits", "digits (bundled), cifar10, cifar100, mnist, fashion-mnist, imagefolder:PATH, "
           "npz:PATH or hf:PATH (see `list`)", annotation="str", types=(str,), type_words="str",
           parse=parse_dataset, check=_named("a name", "see `python -m harness list`")),
    Option("proxies", "all", "'all' or a comma-separated list; PROXY(k=v,...) selects a variant, so "
           "'curvature(n=2),curvature(n=10)' compares two side by side (see `list`)", annotation="str",
           parse=parse_selection, check=_proxies, **_NAMES),
    Option("tasks", DEFAULT_TASKS, "comma-separated tasks (see `list`)", annotation="tuple[str, ...]",
           parse=lambda v: parse_names(v, "--tasks"), check=_tasks, **_NAMES),
    Option("seeds", 3, "number of seeds (3 -> 0,1,2) or an explicit list (0,5)", annotation="tuple[int, ...]",
           field_default=(0, 1, 2), types=(numbers.Integral, str, Iterable), type_words="int, str or list of int",
           parse=parse_seeds, check=_seeds),
    Option("preset", "quick", lambda: f"recipe and model: {', '.join(PRESETS)} (see `list`)", annotation="str",
           types=(str,), type_words="str", fill=lambda ctx, value: ctx.preset.name),
    Option("model", None, "model name (see `list`)", annotation="str", field_default="mlp",
           types=(str, type(None)), type_words="str or None", fill=_preset_or("model"),
           check=_named("a model name", "see `python -m harness list`"), **_FROM_PRESET),
    Option("epochs", None, "training epochs", field=False, cli_type=int, into_recipe=_epochs_into,
           read=lambda cfg: cfg.recipe.epochs, check=_integer("epochs", 1, MAX_EPOCHS), **_FROM_PRESET),
    Option("batch_size", None, "batch size", field=False, cli_type=int, into_recipe=_into("batch_size"),
           read=lambda cfg: cfg.recipe.batch_size, check=_integer("batch size", 1, MAX_BATCH_SIZE),
           **_FROM_PRESET),
    Option("lr", None, "learning rate", field=False, cli_type=float, into_recipe=_into("lr"),
           read=lambda cfg: cfg.recipe.lr, check=_number("learning rate", MAX_LR, MIN_LR), **_FROM_PRESET),
    Option("augment", None, "random crop + flip", field=False, choices=("on", "off"),
           types=(bool, str, type(None)), type_words="bool, 'on'/'off' or None",
           parse=lambda v: parse_switch(v, "augment"), into_recipe=_augment_into, **_FROM_PRESET),
    Option("augment_epochs", None, "augment only the first N epochs, then train on the plain images (lets the "
           "last epochs fit every label)", field=False, cli_type=int, into_recipe=_into("augment_epochs"),
           read=lambda cfg: cfg.recipe.augment_epochs, check=_integer("augment epochs", 0, MAX_EPOCHS, optional=True),
           **_FROM_PRESET),
    Option("recipe", keyword=None, annotation="Recipe", factory=Recipe, fill=lambda ctx, value: ctx.recipe,
           check=_recipe),
    Option("subset", None, "keep the first N training samples in canonical order", annotation="int | None",
           cli_type=int, fill=_preset_or("subset"), check=_integer("subset size", 1, optional=True),
           **_FROM_PRESET),
    _path(name="data_root", help="folder holding torchvision datasets", shown_default="$MEMPROX_CACHE/data, "
          "else ~/.cache/memprox/data"),
    Option("download", False, "let torchvision download the dataset into --data-root", annotation="bool",
           switch=True, check=_boolean, runtime=True),
    Option("noise_rates", None, "symmetric label-noise rates, each in (0, 1)", annotation="tuple[float, ...]",
           field_default=DEFAULT_NOISE_RATES, types=(str, numbers.Real, Iterable, type(None)),
           type_words="str, number, list of numbers or None", parse=lambda v: parse_floats(v, "--noise-rates"),
           fill=lambda ctx, value: value if value is not None else () if ctx.given["noisy_labels"] is not None
           else DEFAULT_NOISE_RATES, check=_noise_rates, shown_default=DEFAULT_NOISE_RATES, used_by=("mislabeled",)),
    Option("duplicate_pairs", None, "duplicated pairs, >= 1", annotation="int | None", cli_type=int,
           check=_integer("duplicate pairs", 1, optional=True,
                          fix="omit it for the default of 0.5% of N, or drop the duplicates task"),
           shown_default="0.5% of N", used_by=("duplicates",)),
    Option("noisy_labels", None, "FILE.npy or FILE.npz[:KEY] of real noisy labels (replaces --noise-rates)",
           annotation="str | None", parse=str, check=_noisy_labels, used_by=("mislabeled",), replaces="noise_rates",
           **_PATH),
    Option("proxy_args", None, "proxy parameter, repeatable (`list` shows each proxy's)", flag="--proxy-arg",
           parse=lambda v: parse_key_values(v, "--proxy-arg"), metavar="PROXY.PARAM=VALUE", **_PARAMS),
    Option("task_args", None, "task parameter, repeatable (`list` shows each task's)", flag="--task-arg",
           parse=lambda v: parse_key_values(v, "--task-arg"), metavar="TASK.PARAM=VALUE", **_PARAMS),
    Option("reference", None, "memorization reference: stability, fz:PATH or cscore:PATH (memorization, theory and "
           "privacy tasks)", annotation="str", field_default=DEFAULT_REFERENCE, types=(str, type(None)),
           type_words="str or None", fill=lambda ctx, value: DEFAULT_REFERENCE if value is None else value,
           check=_reference, shown_default=DEFAULT_REFERENCE, used_by=_reference_users),
    Option("device", "auto", "auto (CUDA when present), cpu, cuda, cuda:N", annotation="str", types=(str,),
           type_words="str", check=_named("a name such as auto, cpu or cuda", "fix --device")),
    # paths stay str on the CLI: Path("") would be the current folder; parse_path refuses an empty path
    _path(name="out", help="output directory (see --overwrite)", field_default=Path("results/latest"),
          cli_default=Path("results/latest"), runtime=True),
    _path(name="store", help="run store", shown_default="$MEMPROX_CACHE/store or ~/.cache/memprox/store",
          runtime=True),
    Option("checkpoint_every_s", 120.0, "seconds between in-run checkpoints (resume after interruption)",
           keyword="checkpoint_every", annotation="float", cli_type=float, check=_number("checkpoint interval"),
           runtime=True),
    Option("threads", 1, "torch threads of each run, 1 to 1024; more pays only for a large model alone on an idle "
           "machine (see 'Threads and workers' in docs/executors.md)", annotation="int", cli_type=int,
           check=_integer("thread count", 1, MAX_THREADS, optional=True,
                          fix="1 (the default) suits most runs; see 'Threads and workers' in docs/executors.md")),
    Option("progress", True, "hide progress bars", annotation="bool", flag="--no-progress", switch=False,
           check=_boolean, runtime=True),
    Option("executor", "local", "where runs train: local (a pool of worker processes), ray (a local Ray or a "
           "cluster), inprocess (this process, for debugging)", annotation="str", types=(str,), type_words="str",
           choices=_executor_names, check=_executor, runtime=True),
    # workers and ray_address are executor options: their executor checks them (validate_executor)
    Option("workers", None, "local, ray: runs training at once (worker processes, or jobs on a local Ray)",
           annotation="int | None", cli_type=int, shown_default="usable CPUs // --threads", runtime=True),
    Option("ray_address", None, "ray: join this cluster (HOST:PORT or auto) instead of starting one",
           annotation="str | None", types=(str, type(None)), type_words="str or None", runtime=True),
    Option("gpus_per_run", 1.0, "on a GPU (local, ray): fraction of a GPU per run, in [0.01, 1] (0.25 packs four)",
           annotation="float", cli_type=float, check=_gpus, runtime=True),
    Option("bootstrap", 1000, "bootstrap resamples for confidence intervals and paired tests (0: none)",
           annotation="int", cli_type=int,
           check=_integer("bootstrap resamples", 0, MAX_BOOTSTRAP, fix="0 disables the intervals")),
    Option("overwrite", False, "let --out replace a folder another experiment wrote", annotation="bool",
           switch=True, check=_boolean, runtime=True),
    Option("precision", None, "training precision: fp32 or bf16 (autocast)", annotation="str", field_default="fp32",
           types=(str, type(None)), type_words="str or None", choices=PRECISIONS, into_recipe=_into("precision"),
           fill=lambda ctx, value: ctx.recipe.precision, check=_precision, **_FROM_PRESET),
    Option("compile", False, "torch.compile the model", annotation="bool", switch=True, check=_boolean),
)


def table() -> tuple[Option, ...]:
    """The option table as it is now (read at each call, so a test may add an entry)."""
    return OPTIONS


def keyword_options() -> dict[str, Option]:
    """run_experiment's keywords -> their options, in keyword order."""
    return {o.keyword: o for o in OPTIONS if o.keyword}


def field_options() -> dict[str, Option]:
    """ExperimentConfig's fields -> their options."""
    return {o.name: o for o in OPTIONS if o.field}


def runtime_fields() -> tuple[str, ...]:
    """The config fields outside the experiment's identity."""
    return tuple(o.name for o in OPTIONS if o.field and o.runtime)
