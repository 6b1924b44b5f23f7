"""Error types that the CLI maps to exit codes.

A `HarnessError` is bad input: the message names the problem and the fix, and the CLI exits
with status 2 before anything is written. A `RunFailed` is a training run that went wrong
(e.g. its loss became NaN); the experiment carries on with the other runs and exits non-zero.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Bad input or configuration; the message says what is wrong and how to fix it."""


class SubsetTooLarge(HarnessError):
    """`--subset` asks for more training samples than the dataset has (`available`). A preset's
    built-in subset is a cap, so the experiment catches this one and takes every sample."""

    def __init__(self, message: str, available: int) -> None:
        super().__init__(message)
        self.available = available


class RunFailed(RuntimeError):
    """A training run could not finish (non-finite loss, ...); names the run."""


class StorageError(RuntimeError):
    """A write after training failed (disk full, permissions); names the path. The CLI prints the
    one-line message and exits 1; every run already in the store is kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or, under the CLI, SIGTERM or SIGHUP) during an experiment: outstanding jobs were
    cancelled, the store is consistent. A KeyboardInterrupt, not an Exception: a notebook's sweep
    written `except Exception: continue` went on to the next configuration after Ctrl-C. The CLI
    prints `interrupted; N runs kept in the store (and M partly trained runs checkpointed), rerun to
    resume` and exits 130 (for SIGTERM/SIGHUP the line starts `stopped by SIG...` and the exit code
    is 143/129)."""

    def __init__(self, kept_runs: int, checkpointed: int = 0) -> None:
        partly = (f" and {checkpointed} partly trained run{'s' if checkpointed != 1 else ''} checkpointed"
                  if checkpointed else "")
        super().__init__(f"interrupted; {kept_runs} run{'s' if kept_runs != 1 else ''} kept in the store{partly}, "
                         "rerun to resume")
        self.kept_runs = kept_runs
        self.checkpointed = checkpointed
