"""Error messages in the caller's words: the checks name the CLI's flags ("fix --epochs", "pass
--overwrite"), which a notebook calling `run_experiment(epochs=0)` has never typed. Raised from the
API, each flag of the option table becomes its keyword ("fix epochs", "pass overwrite=True"); a flag
inside backticks stays, since it is part of a command to run (`python -m harness list`). Warnings
shown while the API runs are worded so too (`keyword_warnings`)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.errors import HarnessError
from harness.options import Option, table

_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?: ('[^']*'|[^\s;,)]*[^\s;,).:]))?")
_NUMBER = re.compile(r"[+-]?\d[\d.e+-]*")
_METAVAR = re.compile(r"[A-Z][A-Z_]*(?:[:.=\[][A-Z_:.=\[\]]*)?")


def as_keywords(message: str) -> str:
    """`message` with the option table's flags outside backticks as run_experiment keywords."""
    parts = message.split("`")
    return "`".join(_words(part) if i % 2 == 0 else part for i, part in enumerate(parts))


@contextmanager
def keyword_errors() -> Iterator[None]:
    """A HarnessError raised inside names keywords, not flags; its class and attributes stay."""
    try:
        yield
    except HarnessError as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (as_keywords(error.args[0]), *error.args[1:])
        raise


@contextmanager
def keyword_warnings() -> Iterator[None]:
    """Warnings shown inside name keywords, not flags. The rewording sits in `warnings.showwarning`,
    after the filters have chosen what to show, so `filterwarnings`, `catch_warnings(record=True)` and
    `pytest.warns` outside still see every warning, in these words, when it happens."""
    shown = warnings.showwarning

    def reworded(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        shown(_reworded(message), category, filename, lineno, file, line)

    warnings.showwarning = reworded
    try:
        yield
    finally:
        warnings.showwarning = shown


def _reworded(message: Warning | str) -> Warning | str:
    text = str(message)
    if "--" not in text:
        return message
    if isinstance(message, str):
        return as_keywords(text)
    try:  # a warning class whose constructor takes more than the text keeps its words
        return type(message)(as_keywords(text))
    except Exception:
        return message


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
            or bool(re.search(r"[_:/.=\d]", word)))
