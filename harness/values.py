"""Checks and parsers for option values, shared by the option table (`harness.options`) and the
executors: each check raises HarnessError naming the value, the flag and the fix; each parser turns
a CLI string or a Python value into what the config holds. Bounds (`MAX_*`) are far above any real
experiment, so that a mistyped number (2**40 epochs) is refused instead of becoming an allocation
or a loop that never ends. No imports beyond the harness's errors: everything else builds on this.
"""

from __future__ import annotations

import ast
import math
import numbers
import operator
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Sized
from pathlib import Path, PurePosixPath
from typing import Any

from harness.errors import HarnessError

MAX_EPOCHS = 100_000
MAX_SEEDS = 1_000  # seeds of one experiment; each trains runs of its own
#: The largest seed: torch takes 64 bits, but the fold and half splits (confident_learning, ssft) seed
#: scikit-learn with the run's seed, which takes 32; a larger one failed there with a traceback.
MAX_SEED = 2**32 - 1
MAX_THREADS = 1_024  # torch threads of a run, and --workers
MAX_BATCH_SIZE = 2**24
MAX_LR = 1e6  # far above any working rate; past 3.4e38 torch cannot even hold it in float32
#: float32's smallest normal number: a smaller rate (1e-320) is 0 or denormal in float32 training, so
#: no weight moves and the "trained" runs are their initialisation.
MIN_LR = 1.2e-38
MAX_NOISE_RATES = 1_000
MAX_BOOTSTRAP = 100_000  # far past the point where percentile intervals stop changing
MIN_GPUS_PER_RUN = 0.01  # Ray rounds smaller fractions away


def short_repr(value: Any, limit: int = 80) -> str:
    """repr(value), shortened: a message is one line even for a huge list."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def leading_zero_hint(value: Any) -> str:
    """Why `02` in `--task-arg memorization.k=02` (or `--proxy-arg`) is text, not 2: a value is read as a
    Python literal, and Python reads no integer with a leading zero. '' for any other value."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?0[0-9_]*[0-9]", value.strip()):
        return f" (Python reads no integer with a leading zero: write {int(value.strip().replace('_', ''))})"
    return ""


# checks ------------------------------------------------------------------------------------------
def check_integer(value: Any, what: str, flag: str, *, minimum: int, maximum: int | None = None,
                  fix: str = "") -> None:
    """Integers only (a bool is not a count), at least `minimum` and at most `maximum`."""
    hint = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HarnessError(f"{what} must be an integer >= {minimum} (got {short_repr(value)}"
                           f"{leading_zero_hint(value)}); fix {flag}{hint}")
    if maximum is not None and value > maximum:
        raise HarnessError(f"{what} must be at most {maximum} (got {value}); fix {flag}{hint}")


def check_number(value: Any, what: str, flag: str, maximum: float = math.inf, minimum: float = 0.0) -> None:
    """A finite number > 0, at least `minimum` (when given) and at most `maximum`."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (isinstance(value, int) or math.isfinite(value))  # math.isfinite overflows on huge ints
    if not ok or value <= 0:
        raise HarnessError(f"{what} must be a finite number > 0 (got {short_repr(value)}); fix {flag}")
    if value < minimum:
        raise HarnessError(f"{what} must be at least {minimum:g} (got {short_repr(value)}): a smaller one vanishes "
                           f"in float32 training and no weight would move; fix {flag}")
    if value > maximum:
        raise HarnessError(f"{what} must be at most {maximum:g} (got {short_repr(value)}); fix {flag}")


def check_count(count: int, maximum: int, what: str, flag: str, why: str) -> None:
    if count > maximum:
        raise HarnessError(f"{flag} gives {count} {what}; at most {maximum} are allowed ({why})")


def check_unique(values: Iterable[Any], what: str, flag: str) -> None:
    """A repeated seed, rate or task would be counted twice (n_seeds 2, std 0) instead of once."""
    repeated = sorted((v for v, k in Counter(values).items() if k > 1), key=str)
    if repeated:
        raise HarnessError(f"{flag} repeats {what}(s) {', '.join(map(str, repeated))}; list each once")


# parsers -----------------------------------------------------------------------------------------
#: The built-in kinds whose PATH is a local file or folder (a plugin's may be a URL or a prefix,
#: where `s3://bucket/a/` and `s3://bucket/a` differ).
LOCAL_PATH_KINDS = ("imagefolder", "npz", "hf")
#: What follows an image folder's path to name its exclude file (`harness.datasets.imagefolder_exclude`): the
#: loader, this module's spelling of a dataset and `config.data_folders` split the path at its last one.
EXCLUDE_OPTION = ",exclude="


def parse_dataset(value: str) -> str:
    """`kind:PATH` with the path's trailing slashes dropped: `imagefolder:/data/c10/` and
    `imagefolder:/data/c10` are one folder, and the name is written into every result file and the
    output folder's identity, where two spellings made one experiment refuse the other's --out. An
    image folder's `,exclude=FILE` is written as the file system reads it (`./x`, `a//x`, `a/./x` are
    `x`, `a/x`, `a/x`; `..` stays, as a link makes it another folder)."""
    kind, sep, path = value.partition(":")
    if kind not in LOCAL_PATH_KINDS:
        return value
    option = ""
    if kind == "imagefolder" and EXCLUDE_OPTION in path:  # the folder's slashes go before the option too
        path, key, rest = path.rpartition(EXCLUDE_OPTION)
        # the file as the file system reads it: `./drop.txt`, `a//drop.txt` made another experiment for --out
        option = key + (PurePosixPath(rest).as_posix() if rest else rest)
    kept = path.rstrip("/")
    return f"{kind}:{path[:len(kept) + 1] if not kept or kept.endswith(':') else kept}{option}"  # `/`, `C:/` stay


def parse_path(value: str | os.PathLike | None, name: str) -> Path | None:
    """A path option, with `~` expanded as in every other path memprox reads (`npz:~/x.npz`,
    `--noisy-labels ~/y.npy`): the shell leaves `--out=~/x` and a quoted "~/x" alone, and
    Path("~/x") is a folder named "~" in the current one. "" would silently mean the current folder."""
    if value is None:
        return None
    flag = f"--{name.replace('_', '-')}"
    try:
        path = Path(value)
    except TypeError as e:  # a PathLike whose fspath is bytes
        raise HarnessError(f"{name} must be a str or pathlib.Path path (got {short_repr(value)})") from e
    if not str(value).strip():
        raise HarnessError(f"{name} is an empty path; pass a folder ({flag} PATH)")
    if any(part != part.strip() for part in path.parts):  # a copied path, "$OUT ": a folder no one finds again
        raise HarnessError(f"{flag} {str(value)!r} has white space at an end of a name, which would become part of "
                           "the folder's name; pass the path without it")
    return expand_home(path, flag)


def expand_home(path: str | Path, where: str) -> Path:
    """`Path(path).expanduser()`, whose RuntimeError (~user of no such user, or no home folder) would
    end the run in a traceback; `where` names the flag or variable the path came from."""
    try:
        expanded = Path(path).expanduser()
    except RuntimeError as e:
        raise HarnessError(f"{where} {short_repr(str(path))}: {str(e).rstrip('.')} to expand ~ in; pass a path "
                           "without ~, or ~user of an existing user") from e
    check_lengths(expanded, where)
    return expanded


#: The longest file name and path the file systems memprox runs on take (Linux: NAME_MAX, PATH_MAX).
NAME_MAX, PATH_MAX = 255, 4095


def check_lengths(path: Path, where: str) -> None:
    """A name or path no file system takes: one line naming it, before anything is written, rather
    than an OSError (ENAMETOOLONG) traceback from the first `exists()` that touches it."""
    long = next((part for part in path.parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        raise HarnessError(f"{where} {short_repr(str(path))}: the name {short_repr(long)} is {len(os.fsencode(long))} "
                           f"bytes long, and file systems take at most {NAME_MAX}; pass a shorter one")
    if len(os.fsencode(str(path))) > PATH_MAX:
        raise HarnessError(f"{where} {short_repr(str(path))} is {len(os.fsencode(str(path)))} bytes long, and file "
                           f"systems take paths of at most {PATH_MAX}; pass a shorter one")


def parse_switch(value: bool | str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("on", "off"):
        return value == "on"
    raise HarnessError(f"{name} takes on/off or True/False (got {value!r})")


def parse_floats(value: str | Sequence[float], flag: str) -> tuple[float, ...]:
    if isinstance(value, str):
        try:
            return tuple(float(t) for t in value.split(",") if t.strip())
        except ValueError as e:
            raise HarnessError(f"{flag} takes comma-separated numbers, got {short_repr(value)}") from e
    values: Sequence[float | numbers.Real] = [value] if isinstance(value, numbers.Real) else value
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise HarnessError(f"{flag} takes numbers, got {short_repr(values)}")
    return tuple(float(v) for v in values)


def parse_seeds(value: int | str | Sequence[int]) -> tuple[int, ...]:
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
        if isinstance(value, (int, numbers.Integral)):  # int spelled out: the checker then knows a sequence is left
            if value < 1:
                raise HarnessError(f"{fix}; a count must be >= 1 (got {value})")
            _count_seeds(int(value))  # before range() makes a tuple of that length
            return tuple(range(int(value)))
        if isinstance(value, Sized):
            _count_seeds(len(value))
        if any(isinstance(v, bool) for v in value):
            raise TypeError
        return tuple(operator.index(v) for v in value)
    except (TypeError, ValueError, OverflowError) as e:
        raise HarnessError(f"{fix}, got {short_repr(value)}") from e


def _count_seeds(count: int) -> None:
    check_count(count, MAX_SEEDS, "seeds", "--seeds", "each seed trains runs of its own")


def parse_names(value: str | Sequence[str], flag: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{flag} takes names, got {short_repr(value)}")
    return tuple(value)


def parse_selection(value: str | Sequence[str]) -> str:
    """Proxies as the selection string the registry parses ('csl,curvature(n=2)')."""
    return value if isinstance(value, str) else ",".join(parse_names(value, "--proxies"))


def parse_key_values(value: Mapping[str, Mapping[str, Any]] | Sequence[str], flag: str) -> dict[str, dict[str, Any]]:
    """['curvature.n=2', ...] (values as Python literals), {'curvature': {'n': 2}}, or the flag's
    form as a dict, {'curvature.n': 2} (a value is then taken as it is, not parsed)."""
    if isinstance(value, Mapping):
        out_map: dict[str, Any] = {}
        for owner, params in value.items():
            name, dot, key = str(owner).partition(".")
            if dot and name and key and not isinstance(params, Mapping):  # {"memorization.k": 8}
                owner, params = name, {key: params}
            if not isinstance(params, Mapping):
                out_map[owner] = params  # not a mapping: refused by the owner's checks, which name it
                continue
            if not isinstance(out_map.setdefault(owner, {}), dict):
                continue  # the owner's bad value stays, to be refused
            if twice := sorted(set(params) & set(out_map[owner])):
                raise HarnessError(f"{flag} sets {owner}.{twice[0]} twice; pass it once")
            out_map[owner].update(params)
        return out_map
    if isinstance(value, str):
        value = [value]
    out: dict[str, dict[str, Any]] = {}
    for item in value:
        name, sep, text = str(item).partition("=")
        owner, dot, key = name.strip().partition(".")
        if not sep or not dot or not owner or not key:
            example = "suspects.k=40" if "task" in flag else "curvature.n=2"
            raise HarnessError(f"{flag} takes NAME.PARAM=VALUE (e.g. {example}), got {item!r}")
        if not text.strip():  # `suspects.by=$UNSET`: an empty string silently meant the parameter's default
            raise HarnessError(f"{flag} {str(item).strip()!r} gives {owner}.{key} no value; pass NAME.PARAM=VALUE, or "
                               "drop the argument for the default")
        try:
            parsed: Any = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a literal: the text
            parsed = text.strip()
        params = out.setdefault(owner, {})
        if key in params:
            raise HarnessError(f"{flag} sets {owner}.{key} twice; pass it once")
        params[key] = parsed
    return out
