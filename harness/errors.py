"""Error types that the CLI maps to exit codes.

A `HarnessError` is bad input: the message names the problem and the fix, and the CLI exits
with status 2 before anything is written. A `RunFailed` is a training run that went wrong
(e.g. its loss became NaN); the experiment carries on with the other runs and exits non-zero.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Bad input or configuration; the message says what is wrong and how to fix it."""


class RunFailed(RuntimeError):
    """A training run could not finish (non-finite loss, ...); names the run."""
