"""The checks of the option table (`harness.options.OPTIONS`): each takes a config value and its
`Option` and raises HarnessError naming the flag and the fix. Apart from the table so that it stays
under its size limit and reads as one list; standard library and harness.values only (no torch)."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.precision import PRECISIONS
from harness.runspec import Corruption
from harness.values import (
    MAX_NOISE_RATES,
    MAX_SEED,
    MAX_SEEDS,
    MIN_GPUS_PER_RUN,
    check_count,
    check_integer,
    check_number,
    check_unique,
    short_repr,
)

if TYPE_CHECKING:
    from harness.options import Option
    from harness.recipe import Recipe


def integer(what: str, minimum: int, maximum: int | None = None, fix: str = "", optional: bool = False):
    return lambda value, opt: None if optional and value is None else check_integer(
        value, what, opt.flag, minimum=minimum, maximum=maximum, fix=fix)


def number(what: str, maximum: float = float("inf"), minimum: float = 0.0):
    return lambda value, opt: check_number(value, what, opt.flag, maximum=maximum, minimum=minimum)


def boolean(value: Any, opt: Option) -> None:
    if not isinstance(value, bool):
        raise HarnessError(f"{opt.name} must be True or False (got {value!r})")


def path_or_none(value: Any, opt: Option) -> None:
    if value is not None and not isinstance(value, Path):
        raise HarnessError(f"{opt.name} must be a pathlib.Path or None (got {type(value).__name__} {value!r})")


def named(what: str, fix: str):
    def check(value: Any, opt: Option) -> None:
        if not isinstance(value, str) or not value.strip():
            raise HarnessError(f"{opt.name} must be {what} (got {value!r}); {fix}")
    return check


def proxies(value: Any, opt: Option) -> None:
    if not isinstance(value, str) or not value.strip():
        raise HarnessError("no proxies selected; pass --proxies all or a comma-separated list")


def tasks(value: Any, opt: Option) -> None:
    if not value:
        raise HarnessError("no tasks selected; pass e.g. --tasks mislabeled,duplicates")
    check_unique(value, "task", opt.flag)


def seeds(value: Any, opt: Option) -> None:
    if not value:
        raise HarnessError("no seeds given; pass a count (--seeds 3) or a list (--seeds 0,5)")
    check_count(len(value), MAX_SEEDS, "seeds", opt.flag, "each seed trains runs of its own")
    for seed in value:
        check_integer(seed, "seed", opt.flag, minimum=0, maximum=MAX_SEED)
    check_unique(value, "seed", opt.flag)


def noise_rates(value: Any, opt: Option) -> None:
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


def noisy_labels(value: Any, opt: Option) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise HarnessError(f"--noisy-labels must name a file (got {value!r}); pass FILE.npy or FILE.npz[:KEY]")
    utf8(value, opt)


def utf8(value: Any, opt: Option) -> None:
    """A path named in outputs is text: LC_ALL=C, PYTHONUTF8=0 kept UTF-8 as surrogates (planning's traceback)."""
    if isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value):
        from harness.datasets.base import not_utf8  # torch and the loaders: only on this error
        raise not_utf8(f"{opt.flag} {value!r}", value, "rename the file (e.g. with convmv -f latin1 -t utf8)")


def owner_params(value: Any, opt: Option) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) and all(
            isinstance(p, str) for p in v) for k, v in value.items()):
        raise HarnessError(f"{opt.flag} must map NAME -> {{PARAM: VALUE}} (got {value!r})")


def reference(value: Any, opt: Option) -> None:
    if not isinstance(value, str):
        raise HarnessError(f"reference must be stability, fz:PATH or cscore:PATH (got {value!r}); fix --reference")
    utf8(value, opt)


def executor(value: Any, opt: Option) -> None:
    if not isinstance(value, str) or not value:
        raise HarnessError(f"executor must be a name such as local or ray (got {short_repr(value)})")


def gpus(value: Any, opt: Option) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_GPUS_PER_RUN <= value <= 1.0:
        raise HarnessError(f"GPUs per run must be in [{MIN_GPUS_PER_RUN:g}, 1] (got {value!r}): a run trains on one "
                           "device; pass e.g. --gpus-per-run 0.25 to pack four runs on a GPU")


def precision(value: Any, opt: Option) -> None:
    if value not in PRECISIONS:
        raise HarnessError(f"unknown precision {value!r}; valid: {', '.join(PRECISIONS)}")


def recipe(value: Recipe, opt: Option) -> None:
    """The recipe's own checks, after the epochs, batch size and lr entries, whose messages name their
    flags; --augment-epochs past --epochs is said here with its flags ("augment epochs must be in [0,
    epochs=2] (got 3)" named neither flag nor the fix)."""
    n, epochs = value.augment_epochs, value.epochs
    if value.augment and isinstance(n, int) and isinstance(epochs, int) and not isinstance(n, bool) and n > epochs:
        raise HarnessError(f"--augment-epochs {n} must be in [0, {epochs}], the training epochs (--epochs or the "
                           f"preset's); pass --augment-epochs {epochs} or less, or more --epochs")
    value.validate()


#: The longest --job-timeout (about 31 years): a larger one is no limit, and a huge int overflowed a float.
MAX_JOB_TIMEOUT_S = 1e9


def seconds(value: Any, opt: Option) -> None:
    check_seconds(value, opt.flag)


def check_seconds(value: Any, flag: str) -> None:
    """None (no limit) or a finite number of seconds > 0: 0 or a negative limit would stop every job at
    once, nan never, and inf means no limit, which None says."""
    if value is None:
        return
    try:
        seconds = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int past float's range
        seconds = math.inf
    if not 0 < seconds <= MAX_JOB_TIMEOUT_S:  # nan compares False
        raise HarnessError(f"{flag} must be a number of seconds > 0 and at most {MAX_JOB_TIMEOUT_S:.0e} (got "
                           f"{short_repr(value)}); pass e.g. {flag} 3600, or omit it for no limit")
