"""`python -m harness`: run experiments, list what is available, manage the run store (`store`).

A thin layer over `harness.api`: argv becomes a dict of the flags actually given, and
`build_config` (the same builder `run_experiment` uses) fills the defaults and validates.

Exit codes: 0 success; 1 some run or proxy failed (the rest finished and was written), or a write
after training failed (StorageError; the runs stay in the store); 2 bad input (one `error:` line,
nothing trained or written); 130 interrupted (Ctrl-C; finished runs stay in the store); 143
stopped by SIGTERM (a scheduler's time limit, `docker stop`, `timeout`), 129 stopped by SIGHUP (the
terminal closed; not under `nohup`, which keeps SIGHUP ignored): as after Ctrl-C, finished runs and
the checkpoints of unfinished ones stay, and rerunning the same command resumes from them. Once the
outputs are written the run is over: a Ctrl-C, SIGTERM or SIGHUP then leaves the exit code the run's
(0 or 1) and says so in a `note:` line; a second one cuts the report on the screen short.
"""

from __future__ import annotations

import argparse
import difflib
import platform
import signal
import sys
import threading
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from harness.api import build_config
from harness.config import ExperimentConfig
from harness.console import KEPT, stop_signal, stop_signals_handled, stopped, write_line
from harness.errors import HarnessError, Interrupted, StorageError
from harness.options import Option, keyword_options
from harness.presets import PRESETS
from harness.store_report import add_store_parser, cmd_store

if TYPE_CHECKING:
    import pandas as pd

    from harness.experiment import Experiment, ExperimentResult


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits; memprox promises one `error:` line and exit 2 instead."""

    argv: list[str] = []
    commands: dict[str, _Parser]  # set by `build_parser`; `_innermost` reads it

    def error(self, message: str) -> NoReturn:
        raise HarnessError(f"{message}{_negative_hint(message, self.argv)}; see `{self.prog} --help`")

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
            close = {flag: " or ".join(matches) for flag in unknown
                     if (matches := difflib.get_close_matches(flag, flags, n=2, cutoff=0.75))}
            hint = f" (did you mean {next(iter(close.values()))}?)" if len(unknown) == 1 and close else \
                f" ({'; '.join(f'{flag}: did you mean {match}?' for flag, match in close.items())})" if close else ""
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


def say(text: str, err: bool = False) -> None:
    """Print a line of the report. A reader that went away (`run ... | head`) ends the report, not the
    command: the outputs are written by then, and the exit code must still say how the experiment
    went (a BrokenPipeError made it 1, with a traceback, and hid the failures). So does a terminal
    that went away (EIO after a closed ssh session's SIGHUP: exit 1 instead of 129). A stdout that
    refuses the report (a full disk) is a StorageError, exit 1: the leaderboard is not lost with exit 0;
    stderr's lines (progress, warnings) are dropped then, not worth ending a run for."""
    try:
        write_line(text, sys.stderr if err else sys.stdout)
    except StorageError:
        if not err:
            raise


class _WarningLines:
    """The CLI's warnings as `warning: ...` lines, each text once: the same warning raised by planning
    and again by loading (an image folder's) printed twice, each time as Python's
    `path:line: UserWarning: ...` with a line of memprox's source under it."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if text not in self.said:
            self.said.add(text)
            say(f"warning: {text}", err=True)


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
    for name, option in keyword_options().items():
        if option.cli_default is not None:
            options.setdefault(name, option.cli_default)
    return options


def preset_note(cfg: ExperimentConfig, input_shape: tuple[int, ...] | None = None) -> str:
    """The recipe as trained. With the dataset's `input_shape`, augmentation the engine does not apply
    (images under 16 pixels wide, token ids: `harness.training.augmenting`) is not called "on"."""
    from harness.training import augmenting

    r = cfg.recipe
    augment = "on" if r.augment else "off"
    if r.augment and r.augment_epochs is not None and r.augment_epochs < r.epochs:
        augment = f"in the first {r.augment_epochs} epochs, then off"
    if r.augment and input_shape is not None and not augmenting(replace(r, augment_epochs=None), input_shape, 0):
        augment = "on, not applied to these inputs (images under 16 pixels wide, or token ids)"  # in no epoch
    schedule = r.schedule
    if r.schedule == "multistep":
        steps = ", ".join(map(str, r.milestones))
        schedule = f"multistep (/{1 / r.gamma:g} at epochs {steps})" if steps else "multistep (no milestone: constant)"
    formats = "".join(f", {word}" for word, on in ((r.precision, r.precision != "fp32"),
                                                    ("channels-last", r.channels_last)) if on)
    return (f"preset {cfg.preset}: {cfg.model}, {r.epochs} epochs {r.optimizer} lr {r.lr:g} {schedule}, "
            f"batch {r.batch_size}, augmentation {augment}{formats}")


def cmd_list() -> None:
    from tabulate import tabulate

    from harness.datasets import dataset_names
    from harness.models import MODELS
    from harness.tasks import TASKS
    from proxies import available_proxies

    say("Proxies (parameters: --proxy-arg NAME.PARAM=VALUE, or NAME(PARAM=VALUE) in --proxies):")
    say(tabulate([(n, c.description, _defaults(c.defaults), c.citation) for n, c in available_proxies().items()],
                 headers=["name", "description", "parameters", "citation"]))
    say(f"\nDatasets: {', '.join(dataset_names())}")
    say("\nModels:")
    say(tabulate([(m.name, m.description) for m in MODELS.values()], headers=["name", "description"]))
    say("\nTasks (parameters: --task-arg NAME.PARAM=VALUE):")
    say(tabulate([(n, t.description, _defaults(t.defaults)) for n, t in TASKS.items()],
                 headers=["name", "description", "parameters"]))
    say("\nPresets:")
    say(tabulate([(n, p.description) for n, p in PRESETS.items()], headers=["name", "description"]))


def _defaults(defaults: dict) -> str:
    """A class's parameters with their defaults, as --proxy-arg and --task-arg take them."""
    return ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"


def cmd_run(args: argparse.Namespace) -> int:
    cfg = build_config(**run_options(args))  # bad options fail here, before the heavy imports
    from harness.experiment import Experiment

    exp = Experiment(cfg)
    settings = len({(s.task, s.label) for _, s, _ in exp.plan.settings})  # plan.settings: one per seed
    say(f"memprox: {cfg.dataset} (N={exp.dataset.n_train}) · {cfg.model} · {_count(cfg.recipe.epochs, 'epoch')} · "
        f"{_count(len(exp.proxies), 'proxy', 'proxies')} · {_count(settings, 'setting')} × "
        f"{_count(len(cfg.seeds), 'seed')} · {_count(len(exp.plan.runs), 'distinct run')} · device {exp.device} · "
        f"preset {cfg.preset}", err=True)
    result = exp.run()
    over = _RunOver.hold()  # the outputs are written: a Ctrl-C no longer stops the run
    try:
        _report(cfg, exp, result)
    except KeyboardInterrupt:  # a second one: the report stops (a stdout that blocks), the exit code stands
        say(f"note: the report was cut short; the run is complete, every output written{_written(cfg)}", err=True)
    over.reporting = False
    code = 1 if result.failures else 0
    if over.caught:
        what = "Ctrl-C" if (signum := stop_signal()) is None else signal.Signals(signum).name
        say(f"note: {what} came after every output was written{_written(cfg)}: the run is complete (exit code "
            f"{code}, as without it)", err=True)
    return code


def _count(n: int, one: str, many: str = "") -> str:
    """`1 seed`, `2 seeds`: a first run of one seed read `1 settings × 1 seeds · 1 distinct runs`."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _written(cfg: ExperimentConfig) -> str:
    return f" to {cfg.out}" if cfg.out is not None else ""


def _report(cfg: ExperimentConfig, exp: Experiment, result: ExperimentResult) -> None:
    """The lines printed once the outputs are written: the runs, the training checks, the leaderboard,
    where the files are, the phases and the failures."""
    from harness.experiment import format_phases
    from harness.leaderboard import markdown
    from harness.machine import mixed_machines_line

    resumed = f" ({len(result.resumed)} resumed from their checkpoints)" if result.resumed else ""
    say(f"runs: {len(result.trained)} trained{resumed}, {len(result.reused)} reused from the store", err=True)
    if mixed := mixed_machines_line(result.machines):
        say(mixed, err=True)
    if result.base_train_acc:
        accs, shape = result.base_train_acc, tuple(exp.dataset.x_train.shape[1:])
        say(f"final training accuracy of the base runs on the labels they trained on: "
            f"mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f} ({preset_note(cfg, shape)})", err=True)
    if result.reference_train_acc:
        accs = result.reference_train_acc
        say(f"final training accuracy of the {len(accs)} stability reference models on their subsets: "
            f"mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f} (memorization compares models that fit their "
            "samples: far below 1, train the reference longer)", err=True)
    if result.flipped_fit:
        fits = list(result.flipped_fit.values())
        say(f"share of the flipped labels the noisy base runs fit: mean {sum(fits) / len(fits):.3f}, min "
            f"{min(fits):.3f} (near 1: the memorization regime of the paper's tables; near 0: the last "
            "epoch's loss alone finds them)", err=True)
    say(markdown(result.leaderboard))
    if cfg.out is not None:
        say(f"leaderboard: {cfg.out / 'leaderboard.csv'}  (per-seed rows: raw.csv, per-sample scores: scores/)")
        if "suspects" in result.outputs:
            drawn = any(f.startswith("figures/suspects_") for f in result.outputs.get("figures", []))
            say(f"suspects: {cfg.out / 'suspects'}/  (every sample, most suspicious first"
                f"{'; the top k in figures/' if drawn else ''})")
            if "suspects/duplicates.csv" in result.outputs["suspects"]:
                exact = any(t.name == "suspects" and t.params.get("duplicates") == "exact" for t in exp.tasks)
                copies = ("texts of equal token ids (after max_length)" if exp.dataset.is_tokens  # exact only
                          else "exact copies" if exact else "copies and near copies")
                say(f"duplicates: {cfg.out / 'suspects' / 'duplicates.csv'}  ({copies} among the training samples: "
                    f"{_pairs_found(result.tables['suspects/duplicates.csv'])})")
                if "suspects/train_test_duplicates.csv" in result.outputs["suspects"]:
                    tests = result.tables["suspects/train_test_duplicates.csv"].drop_duplicates("test")
                    say(f"test copies: {cfg.out / 'suspects' / 'train_test_duplicates.csv'}  ({len(tests)} of the "
                        f"{len(exp.dataset.x_test)} test samples copy a training sample, "
                        f"{int(tests['labels_differ'].sum())} under another label)")
    say(format_phases(result.phase_seconds), err=True)
    if result.failures:
        say(f"{len(result.failures)} failure(s):", err=True)
        for f in result.failures:
            say(f"  - {f}", err=True)


def _pairs_found(pairs: pd.DataFrame) -> str:
    """The pairs found, and how many differ in label: the line read the same for an empty file."""
    if not len(pairs):
        return "none found"
    differ = int(pairs["labels_differ"].sum())
    first = ", listed first" if differ else ""
    return f"{len(pairs)} pair{'s' * (len(pairs) != 1)}, {differ} with different labels{first}"


class _RunOver:
    """SIGINT's handler from the moment the outputs are written (`cmd_run`) until `main` returns: the
    run is over, and its exit code is decided (0, or 1 for a failure). A Ctrl-C then (or the SIGTERM
    or SIGHUP the CLI handles as one) is noted, not raised: it ended the run with exit 130 and
    "interrupted; ... rerun to resume" while every output had been written. While the report prints,
    a second one raises KeyboardInterrupt (a stdout that blocks must not hold the process)."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self.reporting = True

    def __call__(self, signum: int, frame: object) -> None:
        self.caught.append(signum)
        if self.reporting and len(self.caught) == 2:
            raise KeyboardInterrupt

    @classmethod
    def hold(cls) -> _RunOver:
        """A new one, installed where this thread handles Ctrl-C (the main thread, Ctrl-C not ignored)."""
        over = cls()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            signal.signal(signal.SIGINT, over)
        return over


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring) instead of raising."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        with stop_signals_handled(), warnings.catch_warnings():  # Ctrl-C taken back there, for callers of main()
            warnings.showwarning = _WarningLines()
            return _main(argv)
    finally:
        if isinstance(signal.getsignal(signal.SIGINT), _RunOver) and ctrl_c is not None:
            signal.signal(signal.SIGINT, ctrl_c)  # a Ctrl-C pending now is still the run's _RunOver's


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            cmd_list()
            return 0
        if args.command == "store":
            return cmd_store(args, say)
        return cmd_run(args)
    except HarnessError as e:
        say(f"error: {e}", err=True)
        return 2
    except StorageError as e:
        say(f"error: {e}", err=True)
        return 1
    except Warning as w:  # PYTHONWARNINGS=error (set for a CI's test suite) or -W error: a traceback, before
        say(f"error: {w} (a warning, raised as an error by PYTHONWARNINGS or -W error: unset it to go on "
            "with the warning)", err=True)
        return 2
    except Interrupted as e:
        return stopped(str(e))
    except KeyboardInterrupt:
        return stopped(KEPT)
