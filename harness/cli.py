"""`python -m harness`: run experiments, list what is available, manage the run store (`store`).

A thin layer over `harness.api`: argv becomes a dict of the flags actually given, and
`build_config` (the same builder `run_experiment` uses) fills the defaults and validates.

Exit codes: 0 success; 1 some run or proxy failed (the rest finished and was written), or a write
after training failed (StorageError; the runs stay in the store), or the near-duplicate search was
refused after training for want of memory (`harness.search_memory.SearchOutOfMemory`, a StorageError;
the runs stay in the store); 2 bad input (one `error:` line,
nothing trained or written); 130 interrupted (Ctrl-C; finished runs stay in the store); 143
stopped by SIGTERM (a scheduler's time limit, `docker stop`, `timeout`), 129 stopped by SIGHUP (the
terminal closed; not under `nohup`, which keeps SIGHUP ignored): as after Ctrl-C, finished runs and
the checkpoints of unfinished ones stay, and rerunning the same command resumes from them. Once the
outputs are written the run is over: a Ctrl-C, SIGTERM or SIGHUP then leaves the exit code the run's
(0 or 1) and says so in a `note:` line; a second one cuts the report on the screen short. That holds
until `harness.console.main` returns; while Python then exits (about a second), they are ignored, no line.

Here: the commands, exit codes and signals. The parser is `harness.cli_parser`'s, the lines printed
`harness.cli_report`'s; their public names stay importable from this module.
"""

from __future__ import annotations

import argparse
import signal
import warnings
from typing import TYPE_CHECKING

from harness.api import build_config
from harness.cli_parser import add_flag as add_flag
from harness.cli_parser import build_parser, run_options
from harness.cli_parser import help_text as help_text
from harness.cli_parser import version_line as version_line
from harness.cli_report import WarningLines, cmd_list, plural, report_run, say, written_to
from harness.cli_report import preset_note as preset_note
from harness.console import KEPT, RunOver, in_entry, stop_signals_handled, stopped
from harness.errors import HarnessError, Interrupted, StorageError
from harness.store_report import cmd_store

if TYPE_CHECKING:
    from harness.experiment import Experiment


def cost_on(exp: Experiment) -> str:
    """Where the cost task measures, for the start line: alone it trains clean base runs of its own,
    which a store holding only another task's runs lacks (a run trained where a user expected none)."""
    label = next((s.label for task, s, _ in exp.plan.settings if task.name == "cost"), None)
    return "" if label is None else f" · cost on the {label} runs"


def cmd_run(args: argparse.Namespace) -> int:
    cfg = build_config(**run_options(args))  # bad options fail here, before the heavy imports
    from harness.experiment import Experiment

    exp = Experiment(cfg)
    settings = len({(s.task, s.label) for _, s, _ in exp.plan.settings})  # plan.settings: one per seed
    say(f"memprox: {cfg.dataset} (N={exp.dataset.n_train}) · {cfg.model} · {plural(cfg.recipe.epochs, 'epoch')} · "
        f"{plural(len(exp.proxies), 'proxy', 'proxies')} · {plural(settings, 'setting')} × "
        f"{plural(len(cfg.seeds), 'seed')} · {plural(len(exp.plan.runs), 'distinct run')} · device {exp.device} · "
        f"preset {cfg.preset}{cost_on(exp)}", err=True)
    result = exp.run()
    over = RunOver.hold()  # the outputs are written: a Ctrl-C no longer stops the run
    code = 1 if result.failures else 0
    try:
        report_run(cfg, exp, result)
    except KeyboardInterrupt:  # a second one: the report stops (a stdout that blocks), the exit code stands
        say(f"note: the report was cut short; the run is complete, every output written{written_to(cfg)}", err=True)
    except StorageError:  # stdout refuses the report: exit 1 (`_main`)
        over.finish(1, written_to(cfg))
        raise
    over.finish(code, written_to(cfg))
    over.note()  # and again where the signals are handed back (`main`) or ignored (`harness.console.main`)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring) instead of raising. A finished
    run's handler (`RunOver`) is replaced by the caller's on return, then notes a signal it kept since
    the report's note; under `harness.console.main` (the process's entry) it stays, and that notes it."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        with stop_signals_handled(), warnings.catch_warnings():  # Ctrl-C taken back there, for callers of main()
            warnings.showwarning = WarningLines()
            return _main(argv)
    finally:
        over = signal.getsignal(signal.SIGINT)
        if isinstance(over, RunOver) and ctrl_c is not None and not in_entry():
            signal.signal(signal.SIGINT, ctrl_c)  # a signal from now on is the caller's
            over.note()


def _interrupted(args: argparse.Namespace | None) -> str:
    """The Ctrl-C line of the command: `store info` said "runs that finished are kept in the store,
    rerun to resume", a run's line, for a command that trains nothing and only reads (prune --dry-run too)."""
    command = getattr(args, "command", "run")
    if command == "store" and getattr(args, "store_command", None) == "prune" and not getattr(args, "dry_run", False):
        return "interrupted; what was removed is gone whole, the rest is kept whole, rerun to resume"
    return KEPT if command == "run" else "interrupted; nothing was changed"


def _main(argv: list[str] | None) -> int:
    args = None
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
        return stopped(_interrupted(args))
