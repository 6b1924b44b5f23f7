"""Error messages in the caller's words: the checks name the CLI's flags ("fix --epochs", "pass
--overwrite"), which a notebook calling `run_experiment(epochs=0)` has never typed. Raised from the
API, each flag of the option table becomes its keyword ("fix epochs", "pass overwrite=True"); a flag
inside backticks stays, since it is part of a command to run (`python -m harness list`). Warnings
shown while the API runs are worded so too (`keyword_warnings`)."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from typing import Any

from harness.errors import HarnessError, StorageError
from harness.options import Option, table

_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?: ('[^']*'|[^\s;)]*[^\s;,).:]))?")  # a list: a,b
_NUMBER = re.compile(r"[+-]?\d[\d.e+-]*")
_METAVAR = re.compile(r"[A-Z][A-Z_]*(?:[:.=\[][A-Z_:.=\[\]]*)?")


def as_keywords(message: str) -> str:
    """`message` with the option table's flags outside backticks as run_experiment keywords."""
    parts = message.split("`")
    return "`".join(_words(part) if i % 2 == 0 else part for i, part in enumerate(parts))


@contextmanager
def keyword_errors() -> Iterator[None]:
    """A HarnessError raised inside names keywords, not flags; its class and attributes stay. So do a
    StorageError (a write, or the near-duplicate search, refused after training) and a warning raised as
    an error (`-W error`, `simplefilter("error")`)."""
    try:
        yield
    except (HarnessError, StorageError, Warning) as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (as_keywords(error.args[0]), *error.args[1:])
        raise


_lock = threading.Lock()
_depth: dict[int, int] = {}  # thread id -> calls of the API running in it
_shown: Callable[..., None] = warnings.showwarning  # the hook in place when the first call began


@contextmanager
def keyword_warnings() -> Iterator[None]:
    """Warnings shown inside name keywords, not flags. The rewording sits in `warnings.showwarning`,
    after the filters have chosen what to show, so `filterwarnings`, `catch_warnings(record=True)` and
    `pytest.warns` outside still see every warning, in these words, when it happens. One hook for the
    process, put back when the last call ends (unless something replaced it meanwhile: then it only
    passes warnings on); only the warnings of threads inside a call are reworded."""
    global _shown
    me = threading.get_ident()
    with _lock:
        if not _depth and warnings.showwarning is not _reworded_hook:
            _shown = warnings.showwarning
            warnings.showwarning = _reworded_hook
        _depth[me] = _depth.get(me, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _depth[me] -= 1
            if not _depth[me]:
                del _depth[me]
            if not _depth and warnings.showwarning is _reworded_hook:
                warnings.showwarning = _shown


def _reworded_hook(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
    if threading.get_ident() in _depth:
        message = _reworded(message)
    _shown(message, category, filename, lineno, file, line)


def _reworded(message: Warning | str) -> Warning | str:
    """The message in keywords: a str, or a built-in warning class's instance made anew from its one
    argument (another class's constructor may take other arguments, or reword the text itself)."""
    text = str(message)
    if "--" not in text:
        return message
    if isinstance(message, str):
        return as_keywords(text)
    if type(message).__module__ != "builtins" or len(message.args) != 1:
        return message
    return type(message)(as_keywords(text))


def _words(text: str) -> str:
    by_flag = {o.flag: o for o in table() if o.keyword}
    return _FLAG.sub(lambda m: _keyword(by_flag.get(m.group(1)), m.group(0), m.group(2)), text)


def _keyword(option: Option | None, whole: str, after: str | None) -> str:
    if option is None or option.keyword is None:
        return whole
    tail = f" {after}" if after else ""
    if option.switch is not None:
        return f"{option.keyword}={option.switch!r}{tail}"
    if after and _is_value(option, after):
        return f"{option.keyword}={_literal(option, after)}"
    return f"{option.keyword}{tail}"


def _literal(option: Option, word: str) -> str:
    """The value as Python: a number or a placeholder (PATH) as it is, text quoted, a repeatable
    flag's value in a list (`proxy_args=['curvature.n=2']`)."""
    if option.repeat:
        return f"[{word!r}]"
    quoted = word.startswith("'")
    return word if quoted or _NUMBER.fullmatch(word) or _METAVAR.fullmatch(word) else repr(word)


def _is_value(option: Option, word: str) -> bool:
    """Whether the word after a flag is its value (`--executor ray`, `--out PATH`, `--proxy-arg
    a.b=1`, `--model text_bow`) rather than the sentence going on (`--noisy-labels replaces ...`)."""
    choices = option.choices() if callable(option.choices) else option.choices or ()
    return (word in choices or word.startswith("'") or bool(_NUMBER.fullmatch(word)) or bool(_METAVAR.fullmatch(word))
            or bool(re.search(r"[_:/.=\d,]", word)) or _is_name(option, word))


def _is_name(option: Option, word: str) -> bool:
    """Whether a plain word is a name the option selects (`--proxies all`, `--tasks mislabeled`, `--device
    cpu`, `--preset paper`, `--reference stability`, `--dataset digits`): "use device cpu" read as the
    sentence going on, where `device='cpu'` is meant."""
    if option.name == "device":
        return word in ("auto", "cpu", "cuda", "mps")
    if option.name == "reference":
        return word == "stability"  # the others name a file: fz:PATH, cscore:PATH
    if option.name == "proxies":
        from proxies.registry import PROXIES

        return word == "all" or word in PROXIES
    registry: Container[str] = ()
    if option.name == "tasks":
        from harness.tasks import TASKS as registry
    elif option.name == "preset":
        from harness.presets import PRESETS as registry
    elif option.name == "model":
        from harness.model_registry import MODELS as registry
    elif option.name == "dataset":
        from harness.datasets import DATASETS as registry
    return word in registry
