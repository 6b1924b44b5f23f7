"""The `python -m harness` command line as argparse reads it: the subcommands and their flags.

The `run` command's flags are generated from the option table (`harness.options`), so the CLI and
`run_experiment` cannot disagree on a name or a default; `store`'s come from `harness.store_report`.
argparse's own habits are replaced where they broke a promise: a mistake is one `error:` line naming
the closest flag (exit 2, from `harness.cli`), a flag given twice is refused rather than the last one
kept, and no flag is ever abbreviated.
"""

from __future__ import annotations

import argparse
import difflib
import platform
import sys
from typing import Any, NoReturn

from harness.errors import HarnessError
from harness.options import Option, keyword_options
from harness.store_report import add_store_parser


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits; memprox promises one `error:` line and exit 2 instead."""

    argv: list[str] = []
    commands: dict[str, _Parser]  # set by `build_parser`; `_innermost` reads it

    def error(self, message: str) -> NoReturn:
        raise HarnessError(f"{message}{_negative_hint(message, self.argv)}{_value_hint(message)}"
                           f"{self._command_hint(message)}; see `{self.prog} --help`")

    def _command_hint(self, message: str) -> str:
        """`python -m harness` alone said "the following arguments are required: command", not which."""
        if not message.startswith("the following arguments are required: "):
            return ""
        names = [n for a in self._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices]
        return f" (pass one of: {', '.join(names)})" if names else ""

    def parse_args(self, args=None, namespace=None):
        """Unknown flags point at the subcommand's help, with the closest flag it has (`--seed`:
        did you mean `--seeds`?), not at the top-level help that lists none of them."""
        _Parser.argv = list(sys.argv[1:] if args is None else args)  # for `error`'s hint (subparsers too)
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = _innermost(self, parsed)
            flags = [f for action in parser._actions for f in action.option_strings]
            if "--" in extras:  # `run -- --epochs 2`: "--epochs: did you mean --epochs?" named no mistake
                raise HarnessError(f"unrecognized arguments: {' '.join(extras)} (nothing after '--' is read as a "
                                   f"flag: drop the '--'); see `{parser.prog} --help`")
            unknown = [e.partition("=")[0] for e in extras if e.startswith("--")]
            close = {flag: match for flag in unknown if (match := _closest(flag, flags))}
            hint = f" (did you mean {next(iter(close.values()))})" if len(unknown) == 1 and close else \
                f" ({'; '.join(f'{flag}: did you mean {match}' for flag, match in close.items())})" if close else ""
            raise HarnessError(f"unrecognized arguments: {' '.join(extras)}{hint}; see `{parser.prog} --help`")
        return parsed


def _innermost(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the innermost subcommand given (`store prune`): its flags are the ones to suggest."""
    while True:
        name = getattr(parsed, getattr(parser, "command_dest", "command"), None)
        nested = getattr(parser, "commands", {}).get(name)
        if nested is None:
            return parser
        parser = nested


def _closest(flag: str, flags: list[str]) -> str:
    """The flags `flag` was likely meant as, asked ("--seeds?"), or "": the close spellings (`--seed`),
    else the flags it abbreviates (`--noise`: --noise-rates; `--dry`: --dry-run), which argparse would
    have taken and memprox refuses, where "unrecognized arguments: --noise 0.1" named no flag nor the fix."""
    close = difflib.get_close_matches(flag, flags, n=2, cutoff=0.75)
    if close:
        return " or ".join(close) + "?"
    longer = [f for f in flags if f.startswith(flag) and len(flag) > 2][:3]
    return f"{' or '.join(longer)}? flags are not abbreviated, write it whole" if longer else ""


def _value_hint(message: str) -> str:
    """The fix argparse leaves out of its value errors: `--epochs 1.5` ("invalid int value: '1.5'")
    says that --epochs takes a whole number, `--download=yes` ("ignored explicit argument 'yes'") that
    the flag takes no value. (A float flag's "invalid float value: 'abc'" is left as it was: a number.)"""
    flag = message.removeprefix("argument ").partition(":")[0].split("/")[-1]
    if ": ignored explicit argument " in message:
        return f" ({flag} takes no value: pass {flag} alone, or leave it out)"
    return f" ({flag} takes a whole number, e.g. {flag} 3)" if ": invalid int value: " in message else ""


def _negative_hint(message: str, argv: list[str]) -> str:
    """argparse reads `--lr -1e-3` as the flag `--lr` followed by a flag `-1e-3` ("expected one
    argument", which names neither the value nor the fix): say how to pass a value starting with '-'."""
    flag = message.removeprefix("argument ").partition(":")[0]
    if not message.endswith("expected one argument") or flag not in argv:
        return ""
    after = argv[argv.index(flag) + 1:]
    if not after or not after[0].startswith("-") or after[0].startswith("--"):
        return ""
    return f" (argparse reads {after[0]!r} as a flag: write {flag}={after[0]})"


class _Once(argparse.Action):
    """Store a flag's value, refusing a second occurrence (argparse would keep the last silently).
    The refusal names both values and the fix: `--seeds given more than once` left the user to work
    out which of the two to keep, and that only one may stay."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if self.dest in vars(namespace):
            both = "" if self.nargs == 0 else f" ({getattr(namespace, self.dest)}, then {values})"
            parser.error(f"{option_string} given more than once{both}; pass it once")
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def help_text(option: Option) -> str:
    """The option's --help line: its help and, for a flag that takes a value, its default."""
    text = option.help() if callable(option.help) else option.help
    if option.switch is None and not option.repeat:
        shown = next((v for v in (option.shown_default, option.cli_default, option.default) if v is not None), "none")
        text += f" (default: {','.join(map(str, shown)) if isinstance(shown, tuple) else shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_flag(group: argparse.ArgumentParser, option: Option) -> None:
    """The option's flag, generated from its table entry. Absent flags stay out of the namespace
    (their defaults live in the table), so the builder can tell `--duplicate-pairs 0` from no flag
    at all; a flag given twice is an error."""
    kwargs: dict[str, Any] = {"action": "append" if option.repeat else _Once}
    if option.switch is not None:
        kwargs.update(nargs=0, const=option.switch)
    if option.cli_type is not None:
        kwargs["type"] = option.cli_type
    if option.choices is not None:
        kwargs["choices"] = option.choices() if callable(option.choices) else option.choices
    if option.metavar:
        kwargs["metavar"] = option.metavar
    group.add_argument(option.flag, dest=option.keyword, default=argparse.SUPPRESS, help=help_text(option),
                       **kwargs)


def version_line() -> str:
    """`memprox 0.1.0 (torch 2.14.1, Python 3.11.7)`, from the installed metadata: the versions a
    bug report needs (stored manifests record the same in `versions`)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"memprox {installed('memprox')} (torch {installed('torch')}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: `--seed 5` would silently mean `--seeds 5`, i.e. five seeds
    p = _Parser(prog="python -m harness", description="memprox: benchmark memorization proxies", allow_abbrev=False)
    p.add_argument("--version", action="version", version=version_line(),
                   help="print memprox's, torch's and Python's versions (what a bug report needs) and exit")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the shared runs, score proxies, write a leaderboard", allow_abbrev=False)
    for option in keyword_options().values():  # every option of the table with a help text has a flag
        if option.help:
            add_flag(r, option)
    sub.add_parser("list", help="list proxies, datasets, models, tasks and presets")
    add_store_parser(sub, _Once)  # `store info`, `store prune` (harness.store_report)
    p.commands = sub.choices  # the subcommands' parsers by name, for `_Parser.parse_args`
    return p


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as `run_experiment` keywords, with the CLI's own defaults (`Option.cli_default`:
    `--out` defaults to results/latest, where the API writes nothing)."""
    options = {k: v for k, v in vars(args).items() if k != "command"}
    for flag, key in (("--out", "out"), ("--store", "store"), ("--data-root", "data_root")):
        if options.get(key) == "-":  # the convention for stdout; it made a folder named '-' (`rm -r -` fails)
            also = " (the leaderboard is printed on stdout as it is)" if key == "out" else ""
            raise HarnessError(f"{flag} - names no stream here: {flag} is a folder{also}; pass a folder, or {flag} ./- "
                               "for one named '-'")
    for name, option in keyword_options().items():
        if option.cli_default is not None:
            options.setdefault(name, option.cli_default)
    return options
