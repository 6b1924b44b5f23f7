"""An experiment's configuration, after the CLI or `harness.api` has turned options into it.

`ExperimentConfig`'s fields are generated from the option table (`harness.options.OPTIONS`: one
entry per option, with its default and its check), and `validate()` is the one place where
config-level input is checked, so the CLI, the Python API and a hand-built config all refuse the
same mistakes before anything is trained or written (each message names the problem and the fix;
the CLI exits 2). It runs each option's check once per config (a second call on an unchanged
config returns at once), then the checks that span options, then the executor's own
(`harness.executors.validate_executor`). `validate_for_data()` adds the checks that need the loaded
dataset (whether its figures can be drawn, the memory --epochs and --bootstrap imply at its N,
whether the models take its inputs: `harness.config_model_input`); the experiment calls it while
planning, before the first run trains. Checks that need a registry (task and proxy names, their
parameters) live with the tasks and the proxies.

`experiment_id(cfg)` is the experiment's identity (`harness.config_identity`): a hash of every field
but the runtime ones (`Option.runtime`: how or where it runs, not what it computes).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import weakref
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import options as _options
from harness.config_figures import check_figure_backend
from harness.config_identity import experiment_id  # noqa: F401  (imported from here by others)
from harness.config_model_input import check_model_input
from harness.errors import HarnessError
from harness.values import (  # noqa: F401  (MAX_*, short_repr and _integer: imported from here by others)
    EXCLUDE_OPTION,
    MAX_BATCH_SIZE,
    MAX_BOOTSTRAP,
    MAX_EPOCHS,
    MAX_LR,
    MAX_NOISE_RATES,
    MAX_SEED,
    MAX_SEEDS,
    MAX_THREADS,
    MIN_GPUS_PER_RUN,
    expand_home,
    short_repr,
)
from harness.values import check_integer as _integer  # noqa: F401  (harness.executors.base)

if TYPE_CHECKING:
    from harness.datasets import Dataset
    from harness.recipe import Recipe

#: What --epochs and --bootstrap may imply in memory once N is known (see `validate_for_data`).
MAX_IMPLIED_BYTES = 4 * 2**30
#: The fields in the order they have always had: summary.json lists a config's fields in this
#: order. Options not listed here (new ones) follow, in table order.
FIELD_ORDER = ("dataset", "model", "recipe", "preset", "subset", "data_root", "download", "seeds", "tasks",
               "proxies", "proxy_args", "noise_rates", "duplicate_pairs", "noisy_labels", "reference", "task_args",
               "device", "out", "store", "progress", "threads", "checkpoint_every_s", "executor", "workers",
               "ray_address", "gpus_per_run", "bootstrap", "overwrite", "precision", "compile")
#: id(config) -> (a weak reference to it, the field values it passed validate() with)
_VALIDATED: dict[int, tuple[weakref.ref, str]] = {}


if TYPE_CHECKING:  # a dataclass to type checkers (`dataclasses.replace` takes it); the table makes it one
    from dataclasses import dataclass as _dataclass_to_type_checkers
else:
    def _dataclass_to_type_checkers(cls: type) -> type:
        return cls


@_dataclass_to_type_checkers
class ConfigChecks:
    """What an ExperimentConfig does; its fields come from the option table (`config_class`)."""

    if TYPE_CHECKING:  # the generated fields, as type checkers see them (tests/test_config_types12.py
        # holds these to the option table's names and annotations; at run time the table makes them)
        dataset: str
        model: str
        recipe: Recipe
        preset: str
        subset: int | None
        data_root: Path | None
        download: bool
        seeds: tuple[int, ...]
        tasks: tuple[str, ...]
        proxies: str
        proxy_args: dict[str, dict[str, Any]]
        noise_rates: tuple[float, ...]
        duplicate_pairs: int | None
        noisy_labels: str | None
        reference: str
        task_args: dict[str, dict[str, Any]]
        device: str
        out: Path | None
        store: Path | None
        progress: bool
        threads: int
        checkpoint_every_s: float
        executor: str
        workers: int | None
        ray_address: str | None
        gpus_per_run: float
        bootstrap: int
        overwrite: bool
        precision: str
        compile: bool
        job_timeout: float | None

        def __init__(self, **fields: Any) -> None: ...

    def validate(self) -> None:
        """Raise HarnessError for the first config-level mistake; called before anything runs. The
        checks run once per config: called again on the same, unchanged config, it returns at once."""
        values = repr([getattr(self, f.name) for f in dataclasses.fields(self)])
        seen = _VALIDATED.get(id(self))
        if seen is not None and seen[0]() is self and seen[1] == values:
            return
        self._check()
        key = id(self)
        _VALIDATED[key] = (weakref.ref(self, lambda _: _VALIDATED.pop(key, None)), values)

    def _check(self) -> None:
        from harness.executors import validate_executor  # light: no torch, no Ray unless --executor ray

        self._check_shapes()
        for option in _options.table():
            if option.check is not None:
                option.check(option.value_in(self), option)
        cfg: Any = self
        if "mislabeled" in cfg.tasks and not cfg.noisy_labels and not cfg.noise_rates:
            raise HarnessError("the mislabeled task needs noise rates; pass --noise-rates 0.1 (or --noisy-labels "
                               "FILE, or drop the task)")
        validate_executor(cfg)  # the name, other executors' options, and its own options
        _warn_unread_data_options(cfg)
        _warn_few_resamples(cfg.bootstrap)
        if cfg.out is not None:  # figures are drawn only into an output folder (the API's out=None: none)
            check_figure_backend(cfg.tasks)
        _check_out_text(cfg.out)
        if cfg.precision != cfg.recipe.precision:  # training reads the recipe's: never ignore one silently
            raise HarnessError(f"precision {cfg.precision!r} disagrees with recipe.precision "
                               f"{cfg.recipe.precision!r}; set both (harness.api.experiment_config does)")

    def _check_shapes(self) -> None:
        """A hand-built config must hold what `experiment_config` builds: seeds=3 (the builder's count)
        raised TypeError from len(), and tasks="cost" was read one task per letter."""
        from harness.recipe import Recipe

        for option in _options.table():
            value = getattr(self, option.name) if option.field else None
            tuples = option.annotation.startswith("tuple[")
            if (tuples and not isinstance(value, (tuple, list))) or (
                    option.annotation == "Recipe" and not isinstance(value, Recipe)):
                kind = "a tuple" if tuples else "a harness.recipe.Recipe"
                raise HarnessError(f"{option.name} must be {kind} in an ExperimentConfig (got "
                                   f"{type(value).__name__} {short_repr(value)}); build the config with "
                                   "harness.api.experiment_config, which takes counts and comma strings")

    def validate_for_data(self, dataset: Dataset, models: Iterable[str], n_proxies: int) -> None:
        """The checks that need the loaded dataset, run while planning (before the first run
        trains): whether its figures can be drawn (an image-only task's), the memory --epochs and
        --bootstrap imply at its N, and whether each model the plan trains (`models`: the proxies'
        and the reference's) takes its input shape."""
        n = dataset.n_train
        if self.out is not None:  # the tasks that draw only images, now that the data say whether they are
            check_figure_backend(self.tasks, images=dataset.is_image)
        self._check_epochs_memory(n)
        self._check_bootstrap_memory(n, n_proxies)
        for model in sorted(set(models)):
            check_model_input(model, tuple(dataset.x_train.shape[1:]), dataset.num_classes, self.dataset,
                              tokens=dataset.is_tokens)
        if self.recipe.augment and (dataset.is_tokens or dataset.x_train.shape[-1] < 16):
            shape = "x".join(map(str, dataset.x_train.shape[1:]))
            warnings.warn(f"augmentation (--augment on, or the {self.preset} preset's) has no effect on the {shape} "
                          f"samples of {self.dataset}: crop + flip apply only to images at least 16 pixels wide, so "
                          "the runs train on the plain samples; pass --augment off", stacklevel=3)
        if self.dataset == "mnist" and self.recipe.augment and dataset.x_train.shape[-1] >= 16:
            warnings.warn("--augment on mirrors MNIST digits, and a mirrored digit is not its label (a 2, a 7); the "
                          "recipe's crop + flip is CIFAR's: pass --augment off for mnist", stacklevel=3)

    def _check_epochs_memory(self, n: int) -> None:
        """Recorders keep one float32 per sample and epoch ((epochs, N) buffers, several per run)."""
        epochs = self.recipe.epochs
        need = 4 * epochs * n
        if need > MAX_IMPLIED_BYTES:
            fit = MAX_IMPLIED_BYTES // (4 * n)
            raise HarnessError(f"--epochs {epochs} at N={n} samples needs {_gib(need)} for each per-epoch record "
                               f"(epochs x N float32); at most {fit} epochs fit in {_gib(MAX_IMPLIED_BYTES)}: lower "
                               "--epochs or use a --subset")

    def _check_bootstrap_memory(self, n: int, n_proxies: int) -> None:
        """B resamples are held as a (B, N) uint16 count matrix, weighed in float64 chunks, and
        combined over seeds as (B, seeds) draws with every proxy's (B, seeds) replicates."""
        from harness.bootstrap import CHUNK_ELEMENTS

        b = self.bootstrap
        need = 2 * b * n + 8 * min(b * n, CHUNK_ELEMENTS) + 8 * b * len(self.seeds) * (n_proxies + 1)
        if b and need > MAX_IMPLIED_BYTES:
            per_resample = 2 * n + 8 * len(self.seeds) * (n_proxies + 1)
            fit = (MAX_IMPLIED_BYTES - 8 * CHUNK_ELEMENTS) // per_resample
            raise HarnessError(f"--bootstrap {b} at N={n} samples needs {_gib(need)} (B x N uint16 resample counts, "
                               f"float64 weights, seed replicates of {n_proxies} proxies); at most {fit} resamples fit "
                               f"in {_gib(MAX_IMPLIED_BYTES)}: lower --bootstrap (1000 is typical, 0 disables the "
                               "intervals)")


#: Built-in datasets whose loaders read neither --data-root nor --download (only torchvision's do;
#: a plugin's loader may read both, so only these are named).
NO_DATA_ROOT = ("digits", "npz", "imagefolder", "hf")


def _warn_unread_data_options(cfg: Any) -> None:
    """`--download` or `--data-root` with a dataset that reads neither was accepted without a word,
    as if the data had come from there (the gpus_per_run precedent: a warning, not a refusal, so a
    script that switches datasets keeps its flags)."""
    kind = str(cfg.dataset).partition(":")[0]
    if kind not in NO_DATA_ROOT:
        return
    given = [flag for flag, on in (("--download", cfg.download), ("--data-root", cfg.data_root is not None)) if on]
    if given:
        where = "is bundled" if kind == "digits" else "is read from its own PATH"
        warnings.warn(f"{' and '.join(given)} {'have' if len(given) > 1 else 'has'} no effect on --dataset {kind}, "
                      f"which {where}; only torchvision's datasets (cifar10, cifar100, mnist, fashion-mnist) read "
                      f"{'them' if len(given) > 1 else 'it'}: drop {' and '.join(given)}", UserWarning, stacklevel=5)


def _check_out_text(out: Path | str | None) -> None:
    """--out's path is printed and written as text (the report's lines, summary.json): a name that is not
    UTF-8 (a Latin-1 byte), or UTF-8 read under LC_ALL=C with PYTHONUTF8=0 (kept as surrogates), ended
    the run after training in a UnicodeEncodeError traceback, every output lost. The staging note holds
    the name's bytes (`harness.outputs_leftovers`), but the rest does not: refused, as --noisy-labels and
    --reference paths are; the current folder counts for a relative --out (gone: `check_out` says so)."""
    try:
        text = os.path.abspath(out) if out is not None else ""
    except FileNotFoundError:  # a relative --out in a deleted current folder: check_out's one line names it
        return
    if any("\ud800" <= c <= "\udfff" for c in text):
        from harness.datasets.base import not_utf8  # torch and the loaders: only on this error

        raise not_utf8(f"--out {text!r}", text, "pass an --out whose path is UTF-8 (rename the folder, e.g. with "
                       "convmv -f latin1 -t utf8)")


#: Below this many resamples a 95 % interval's ends are interpolated between the two or three most
#: extreme resamples (fewer than 40 leave no resample in either 2.5 % tail), and p_vs_best moves in
#: steps of 1/B: a number that looks like an interval but is close to the resamples' range.
FEW_RESAMPLES = 100


def _warn_few_resamples(bootstrap: int) -> None:
    """--bootstrap 1 to 99 is allowed (a quick look) but said, so that nobody reads it as the default's interval."""
    if 0 < bootstrap < FEW_RESAMPLES:
        warnings.warn(f"--bootstrap {bootstrap}: with fewer than {FEW_RESAMPLES} resamples the 95 % intervals are "
                      f"close to the range of the resamples and p_vs_best moves in steps of 1/{bootstrap}; use 1000 "
                      "(the default) for intervals to report, or 0 for none", UserWarning, stacklevel=5)


def data_folders(cfg: Any) -> tuple[Path, ...]:
    """The folders `cfg` reads data from (a NAME:PATH dataset's path, --data-root where the dataset
    reads it): `check_out`'s `data_paths`."""
    from harness.datasets import DATASETS

    kind, sep, path = cfg.dataset.partition(":")
    if kind == "imagefolder" and EXCLUDE_OPTION in path:  # the folder, not `/d,exclude=x` (an --out inside it passed)
        path = path.rpartition(EXCLUDE_OPTION)[0]
    # `digits:/data` is refused by the loader, as a name that takes no path: not as an --out inside "its" folder
    takes_path = kind not in DATASETS or DATASETS[kind].takes_path  # a plugin not loaded yet: as if it did
    folders = [expand_home(path, f"--dataset {kind}:")] if sep and path and takes_path else []
    if cfg.data_root is not None and kind not in NO_DATA_ROOT:  # an unread --data-root is no data of this run
        folders.append(expand_home(cfg.data_root, "--data-root"))
    return tuple(folders)


@cache
def _class_for(table: tuple[_options.Option, ...]) -> type:
    by_name = {o.name: o for o in table if o.field}
    names = [n for n in FIELD_ORDER if n in by_name] + [n for n in by_name if n not in FIELD_ORDER]

    def spec(option: _options.Option) -> tuple[str, str, Any]:
        if option.factory is not None:
            return option.name, option.annotation, dataclasses.field(default_factory=option.factory)
        return option.name, option.annotation, dataclasses.field(default=option.make_default())

    doc = ("An experiment's options, validated by `validate()`; one field per entry of "
           "`harness.options.OPTIONS` that is a config field.")
    return dataclasses.make_dataclass("ExperimentConfig", [spec(by_name[n]) for n in names], bases=(ConfigChecks,),
                                      namespace={"__module__": __name__, "__doc__": doc})


def config_class() -> type:
    """The ExperimentConfig class of the option table as it is now."""
    return _class_for(_options.table())


if TYPE_CHECKING:
    class ExperimentConfig(ConfigChecks):
        """What type checkers see: `ConfigChecks`, a dataclass with the declared fields."""
else:
    ExperimentConfig = config_class()
#: Config fields that say how or where an experiment runs, not what it computes: two configs that
#: differ only in these are the same experiment (and may write to the same --out).
RUNTIME_FIELDS = _options.runtime_fields()


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"
