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

Adding an option is one entry here (and reading it where it acts). The entries' checks are in
`harness.option_checks`. Checks spanning several options (mislabeled needs noise rates, the precision
agrees with the recipe) live in `ExperimentConfig.validate`, executor options' in
`harness.executors.validate_executor`, task and proxy parameters' in their constructors.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from harness import option_checks as checks
from harness.errors import HarnessError
from harness.precision import PRECISIONS
from harness.presets import PRESETS, Preset
from harness.recipe import Recipe
from harness.values import (
    MAX_BATCH_SIZE,
    MAX_BOOTSTRAP,
    MAX_EPOCHS,
    MAX_LR,
    MAX_THREADS,
    MIN_LR,
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


def _no_empty_item(parse: Callable[[Any], Any], flag: str, example: str, text: bool = True) -> Callable[[Any], Any]:
    """`parse` for a comma list that refuses an empty item: `--seeds 0,,5` ran seeds 0 and 5, and
    `--noise-rates $A,0.1` with $A unset one rate, where a value was lost (as `--proxies csl,,aum` is
    refused). One trailing comma stays allowed: `--seeds 5,` is the list of seed 5 alone. A Python
    list's empty or blank string is refused too (`proxies=["csl", os.environ.get("P", "")]` ran csl
    alone); `text=False` leaves the text form to `parse` (--proxies names its own empty items)."""
    def checked(value: Any) -> Any:
        if isinstance(value, list | tuple) and any(  # not any Sequence: range(2**70) is refused by `parse`
                isinstance(item, str) and not item.strip() for item in value):
            raise HarnessError(f"{flag} has an empty item ({short_repr(value)}: a value lost, e.g. an unset "
                               f"variable?); drop it or give its value, e.g. {flag} {example}")
        if text and isinstance(value, str) and "," in value:
            items = value.split(",")
            if any(not item.strip() for item in items[:-1]):
                raise HarnessError(f"{flag} {value!r} has an empty item between commas (a value lost, e.g. an "
                                   f"unset shell variable?); list the values with one comma between each, e.g. "
                                   f"{flag} {example}")
        return parse(value)
    return checked


_TASK_LIST = _no_empty_item(lambda v: parse_names(v, "--tasks"), "--tasks", "mislabeled,duplicates")
_SEED_LIST = _no_empty_item(parse_seeds, "--seeds", "0,5")
_RATE_LIST = _no_empty_item(lambda v: parse_floats(v, "--noise-rates"), "--noise-rates", "0.01,0.1")
_PROXY_LIST = _no_empty_item(parse_selection, "--proxies", "csl,aum", text=False)


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
               else value, check=checks.owner_params, repeat=True)


def _path(name: str, help: str, **kwargs: Any) -> Option:
    """A folder option: None or a non-empty path."""
    return Option(name, None, help, annotation="Path | None", parse=lambda v: parse_path(v, name),
                  check=checks.path_or_none, **_PATH, **kwargs)


#: Every experiment option, in run_experiment's keyword order (also the order of --help).
OPTIONS: tuple[Option, ...] = (
    Option("dataset", "digits", "digits (bundled), cifar10, cifar100, mnist, fashion-mnist, imagefolder:PATH, "
           "npz:PATH or hf:PATH (see `list`)", annotation="str", types=(str,), type_words="str",
           parse=parse_dataset, check=checks.named("a name", "see `python -m harness list`")),
    Option("proxies", "all", "'all' or a comma-separated list; PROXY(k=v,...) selects a variant, so "
           "'curvature(n=2),curvature(n=10)' compares two side by side (see `list`)", annotation="str",
           parse=_PROXY_LIST, check=checks.proxies, **_NAMES),
    Option("tasks", DEFAULT_TASKS, "comma-separated tasks (see `list`)", annotation="tuple[str, ...]",
           parse=_TASK_LIST, check=checks.tasks, **_NAMES),
    Option("seeds", 3, "number of seeds (3 -> 0,1,2) or an explicit list (0,5)", annotation="tuple[int, ...]",
           field_default=(0, 1, 2), types=(numbers.Integral, str, Iterable), type_words="int, str or list of int",
           parse=_SEED_LIST, check=checks.seeds),
    Option("preset", "quick", lambda: f"recipe and model: {', '.join(PRESETS)} (see `list`)", annotation="str",
           types=(str,), type_words="str", fill=lambda ctx, value: ctx.preset.name),
    Option("model", None, "model name (see `list`)", annotation="str", field_default="mlp",
           types=(str, type(None)), type_words="str or None", fill=_preset_or("model"),
           check=checks.named("a model name", "see `python -m harness list`"), **_FROM_PRESET),
    Option("epochs", None, "training epochs", field=False, cli_type=int, into_recipe=_epochs_into,
           read=lambda cfg: cfg.recipe.epochs, check=checks.integer("epochs", 1, MAX_EPOCHS), **_FROM_PRESET),
    Option("batch_size", None, "batch size", field=False, cli_type=int, into_recipe=_into("batch_size"),
           read=lambda cfg: cfg.recipe.batch_size, check=checks.integer("batch size", 1, MAX_BATCH_SIZE),
           **_FROM_PRESET),
    Option("lr", None, "learning rate", field=False, cli_type=float, into_recipe=_into("lr"),
           read=lambda cfg: cfg.recipe.lr, check=checks.number("learning rate", MAX_LR, MIN_LR), **_FROM_PRESET),
    Option("augment", None, "random crop + flip", field=False, choices=("on", "off"),
           types=(bool, str, type(None)), type_words="bool, 'on'/'off' or None",
           parse=lambda v: parse_switch(v, "augment"), into_recipe=_augment_into, **_FROM_PRESET),
    Option("augment_epochs", None, "augment only the first N epochs, then train on the plain images (lets the "
           "last epochs fit every label)", field=False, cli_type=int, into_recipe=_into("augment_epochs"),
           read=lambda cfg: cfg.recipe.augment_epochs,
           check=checks.integer("augment epochs", 0, MAX_EPOCHS, optional=True), **_FROM_PRESET),
    Option("recipe", keyword=None, annotation="Recipe", factory=Recipe, fill=lambda ctx, value: ctx.recipe,
           check=checks.recipe),
    Option("subset", None, "keep the first N training samples in canonical order", annotation="int | None",
           cli_type=int, fill=_preset_or("subset"), check=checks.integer("subset size", 1, optional=True),
           **_FROM_PRESET),
    _path(name="data_root", help="folder holding torchvision datasets", shown_default="$MEMPROX_CACHE/data, "
          "else ~/.cache/memprox/data"),
    Option("download", False, "let torchvision download the dataset into --data-root", annotation="bool",
           switch=True, check=checks.boolean, runtime=True),
    Option("noise_rates", None, "symmetric label-noise rates, each in (0, 1)", annotation="tuple[float, ...]",
           field_default=DEFAULT_NOISE_RATES, types=(str, numbers.Real, Iterable, type(None)),
           type_words="str, number, list of numbers or None", parse=_RATE_LIST,
           fill=lambda ctx, value: value if value is not None else () if ctx.given["noisy_labels"] is not None
           else DEFAULT_NOISE_RATES, check=checks.noise_rates, shown_default=DEFAULT_NOISE_RATES,
           used_by=("mislabeled",)),
    Option("duplicate_pairs", None, "duplicated pairs, >= 1", annotation="int | None", cli_type=int,
           check=checks.integer("duplicate pairs", 1, optional=True,
                          fix="omit it for the default of 0.5% of N, or drop the duplicates task"),
           shown_default="0.5% of N", used_by=("duplicates",)),
    Option("noisy_labels", None, "FILE.npy or FILE.npz[:KEY] of real noisy labels (replaces --noise-rates)",
           annotation="str | None", parse=str, check=checks.noisy_labels, used_by=("mislabeled",),
           replaces="noise_rates", **_PATH),
    Option("proxy_args", None, "proxy parameter, repeatable (`list` shows each proxy's)", flag="--proxy-arg",
           parse=lambda v: parse_key_values(v, "--proxy-arg"), metavar="PROXY.PARAM=VALUE", **_PARAMS),
    Option("task_args", None, "task parameter, repeatable (`list` shows each task's)", flag="--task-arg",
           parse=lambda v: parse_key_values(v, "--task-arg"), metavar="TASK.PARAM=VALUE", **_PARAMS),
    Option("reference", None, "memorization reference: stability, fz:PATH or cscore:PATH (memorization, theory and "
           "privacy tasks)", annotation="str", field_default=DEFAULT_REFERENCE, types=(str, type(None)),
           type_words="str or None", fill=lambda ctx, value: DEFAULT_REFERENCE if value is None else value,
           check=checks.reference, shown_default=DEFAULT_REFERENCE, used_by=_reference_users),
    Option("device", "auto", "auto (CUDA when present), cpu, cuda, cuda:N", annotation="str", types=(str,),
           type_words="str", check=checks.named("a name such as auto, cpu or cuda", "fix --device")),
    # paths stay str on the CLI: Path("") would be the current folder; parse_path refuses an empty path
    _path(name="out", help="output directory (see --overwrite)", field_default=Path("results/latest"),
          cli_default=Path("results/latest"), runtime=True),
    _path(name="store", help="run store", shown_default="$MEMPROX_CACHE/store or ~/.cache/memprox/store",
          runtime=True),
    Option("checkpoint_every_s", 120.0, "seconds between in-run checkpoints (resume after interruption)",
           keyword="checkpoint_every", annotation="float", cli_type=float, check=checks.number("checkpoint interval"),
           runtime=True),
    Option("threads", 1, "torch threads of each run, 1 to 1024; more pays only for a large model alone on an idle "
           "machine (see 'Threads and workers' in docs/executors.md)", annotation="int", cli_type=int,
           check=checks.integer("thread count", 1, MAX_THREADS, optional=True,
                          fix="1 (the default) suits most runs; see 'Threads and workers' in docs/executors.md")),
    Option("progress", True, "hide progress bars", annotation="bool", flag="--no-progress", switch=False,
           check=checks.boolean, runtime=True),
    Option("executor", "local", "where runs train: local (a pool of worker processes), ray (a local Ray or a "
           "cluster), inprocess (this process, for debugging)", annotation="str", types=(str,), type_words="str",
           choices=_executor_names, check=checks.executor, runtime=True),
    # workers, ray_address and job_timeout are executor options: an executor that does not read one refuses it
    # (validate_executor); the executor checks workers and ray_address, the table job_timeout
    Option("workers", None, "local, ray: runs training at once (worker processes, or jobs on a local Ray)",
           annotation="int | None", cli_type=int, shown_default="usable CPUs // --threads", runtime=True),
    Option("ray_address", None, "ray: join this cluster (HOST:PORT or auto) instead of starting one",
           annotation="str | None", types=(str, type(None)), type_words="str or None", runtime=True),
    Option("job_timeout", None, "local, ray: seconds a job (a run, or a chunk of an ensemble) may run before it is "
           "stopped and reported failed, not retried; its clock starts when it starts on a worker, and again in a "
           "rerun, which resumes it from its last checkpoint (see 'Job time limit' in docs/executors.md)",
           annotation="float | None", cli_type=float, types=(numbers.Real, type(None)), type_words="number or None",
           check=checks.seconds, metavar="SECONDS", shown_default="no limit", runtime=True),
    Option("gpus_per_run", 1.0, "on a GPU (local, ray): fraction of a GPU per run, in [0.01, 1] (0.25 packs four)",
           annotation="float", cli_type=float, check=checks.gpus, runtime=True),
    Option("bootstrap", 1000, "bootstrap resamples for confidence intervals and paired tests (0: none)",
           annotation="int", cli_type=int,
           check=checks.integer("bootstrap resamples", 0, MAX_BOOTSTRAP, fix="0 disables the intervals")),
    Option("overwrite", False, "let --out replace a folder another experiment wrote", annotation="bool",
           switch=True, check=checks.boolean, runtime=True),
    Option("precision", None, "training precision: fp32 or bf16 (autocast)", annotation="str", field_default="fp32",
           types=(str, type(None)), type_words="str or None", choices=PRECISIONS, into_recipe=_into("precision"),
           fill=lambda ctx, value: ctx.recipe.precision, check=checks.precision, **_FROM_PRESET),
    Option("compile", False, "torch.compile the model", annotation="bool", switch=True, check=checks.boolean),
)


def table() -> tuple[Option, ...]:
    """The option table as it is now (read at each call, so a test may add an entry)."""
    return OPTIONS


def keyword_options() -> dict[str, Option]:
    """run_experiment's keywords -> their options, in keyword order."""
    return {o.keyword: o for o in OPTIONS if o.keyword}


def runtime_fields() -> tuple[str, ...]:
    """The config fields outside the experiment's identity."""
    return tuple(o.name for o in OPTIONS if o.field and o.runtime)
