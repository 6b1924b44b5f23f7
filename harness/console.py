"""The entry of `memprox` and `python -m harness`: everything here runs before torch is imported.

A shell starts a script's background job (`memprox run ... &`) with SIGINT ignored, and Python
then never raises KeyboardInterrupt. memprox promises that Ctrl-C always stops a run (exit 130,
stored runs kept), so the handler is taken back first: importing `harness.cli` (torch) takes 2 s
on an idle machine and 20 s on a loaded one, and a `kill -INT` in that window was lost.

Machines stop jobs with other signals: SLURM's time limit, `docker stop`, Kubernetes and `timeout`
send SIGTERM (then SIGKILL after a grace period), a closed ssh session sends SIGHUP. Python's
default for both is to die at once: no message, no `finally`, workers and Ray left to their own
reapers. `stop_signals_handled` makes them stop a CLI run the way Ctrl-C does (same cleanup path,
checkpoints kept), and the CLI then exits 128 + the signal's number (143, 129), as shells and
schedulers expect. Only the CLI installs them: a program that calls `harness.api` owns its signals.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TextIO

from harness.errors import StorageError

#: The signals other than Ctrl-C that stop a run: a scheduler's or container's stop, a closed terminal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: The line of an interrupted run when the runner could not count what it kept.
KEPT = "interrupted; runs that finished are kept in the store, rerun to resume"
#: The stop signals received since `stop_signals_handled` began (the first one decides the exit code).
_received: list[int] = []
#: Whether `main`, the process's entry, is running the CLI: a finished run's `RunOver` then stays
#: SIGINT's handler until `main` ignores the signals (`harness.cli.main` leaves it in place).
_entry: list[bool] = []


def take_back_ctrl_c() -> None:
    """Restore Python's SIGINT handler when the process started with SIGINT ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread: the embedding program owns signals
            pass


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP: act as Ctrl-C does now. The current SIGINT handler decides, so a block that
    holds Ctrl-C (`harness.io.interrupts_held`, a rollback of swapped files) holds this signal too.
    Repeats are ignored: a scheduler's second SIGTERM must not break off the cleanup the first began."""
    if _received:
        return
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def stop_signal() -> int | None:
    """The stop signal that ended this run (None: none, e.g. Ctrl-C)."""
    return _received[0] if _received else None


def install_stop_signals() -> dict[int, object]:
    """Handle SIGTERM and SIGHUP with `_stop`; returns the handlers replaced. A signal the process
    started with ignored stays ignored (`nohup` ignores SIGHUP so that the run outlives the terminal)."""
    replaced: dict[int, object] = {}
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN or previous is _stop:
            continue
        try:
            signal.signal(sig, _stop)
        except ValueError:  # not the main thread: the embedding program owns signals
            return replaced
        replaced[sig] = previous
    return replaced


@contextmanager
def stop_signals_handled() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the block like Ctrl-C (`stop_signal` says which came), and Ctrl-C does
    even if the process ignored it; the handlers replaced are put back afterwards, for a program that
    called `harness.cli.main` itself (one that ignores Ctrl-C, e.g. a background job, still does)."""
    ctrl_c = signal.getsignal(signal.SIGINT)
    take_back_ctrl_c()
    replaced = install_stop_signals()
    if replaced:  # not already handled by `main`, whose record of a signal must survive
        _received.clear()
    try:
        yield
    finally:
        for sig, previous in replaced.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)  # type: ignore[arg-type]
        if ctrl_c is signal.SIG_IGN and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller ignored Ctrl-C: so it stays


class RunOver:
    """SIGINT's handler from the moment the outputs are written (`harness.cli.cmd_run`) until the CLI's
    end: the run is over, and its exit code decided (0, or 1 for a failure). A Ctrl-C then (or the
    SIGTERM or SIGHUP handled as one) is noted, not raised: it ended the run with exit 130 and
    "interrupted; ... rerun to resume" while every output had been written. While the report prints,
    a second one raises KeyboardInterrupt (a stdout that blocks must not hold the process).

    It stays the handler until `main` ignores these signals for the process's exit, or `harness.cli.main`
    gives a program its handler back, and `note` is called there once more: a signal after the report's
    own note was kept and never said, and Python's handler, put back before `main` ignored the signals,
    turned one into exit 130 (143, 129) with "interrupted". After that the process exits: Python's exit
    handlers and its teardown (about a second with torch loaded) run with the signals ignored, no line."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self.reporting = True
        self.code = 0  # the exit code, and where the outputs went (` to OUT`), once `finish` says them
        self.where = ""
        self.noted = False

    def __call__(self, signum: int, frame: object) -> None:
        self.caught.append(signum)
        if self.reporting and len(self.caught) == 2:
            raise KeyboardInterrupt

    @classmethod
    def hold(cls) -> RunOver:
        """A new one, installed where this thread handles Ctrl-C (the main thread, Ctrl-C not ignored)."""
        over = cls()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            signal.signal(signal.SIGINT, over)
        return over

    def finish(self, code: int, where: str) -> None:
        """The report is over (or cut short): `code` is the exit code, `where` where the outputs went."""
        self.reporting, self.code, self.where = False, code, where

    def note(self) -> None:
        """Once the report is over, say once on stderr that a signal came after the outputs were written."""
        if self.reporting or self.noted or not self.caught:
            return
        self.noted = True
        what = "Ctrl-C" if (signum := stop_signal()) is None else signal.Signals(signum).name
        try:
            write_line(f"note: {what} came after every output was written{self.where}: the run is complete "
                       f"(exit code {self.code}, as without it)", sys.stderr)
        except StorageError:  # stderr refuses the line (a full disk): the exit code says it all the same
            pass


def in_entry() -> bool:
    """Whether `main`, the process's entry, runs the CLI (see `RunOver`)."""
    return bool(_entry)


def stopped(text: str) -> int:
    """Print how the run was interrupted (`text`: the Ctrl-C line) and return the exit code: 130 for
    Ctrl-C, else 128 + the stop signal's number, with a line naming the signal."""
    signum = stop_signal()
    if signum is not None:
        what = text.removeprefix("interrupted; ").removesuffix(", rerun to resume")
        text = f"stopped by {signal.Signals(signum).name}; {what}, rerun the same command to resume"
    if text:
        try:
            write_line(text, sys.stderr)
        except StorageError:  # stderr refuses the line (a full disk): the exit code still says it
            pass
    return 130 if signum is None else 128 + signum


def write_line(text: str, stream: TextIO | None) -> None:
    """Print a line; a reader that went away (`| head`: EPIPE) or a terminal that did (a closed ssh
    session: EIO, with the SIGHUP) sends this and every later line nowhere, not into a traceback:
    the exit code must still say how the run ended. Any other failure (`> log` on a full disk:
    ENOSPC) raises StorageError naming the file: a leaderboard lost with exit 0 passed for success."""
    if stream is None:  # started with the stream closed (`2>&-`): print(file=None) wrote to stdout instead
        return
    try:
        print(encodable(text, stream), file=stream, flush=True)
    except OSError as e:
        where = _target(stream)
        gone = isinstance(e, BrokenPipeError) or (e.errno == errno.EIO and where == "a terminal")
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:  # what is left to print, and Python's flush at exit, go nowhere
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # not a file (a captured stream): each later line is dropped here
            pass
        finally:
            os.close(devnull)
        if not gone:
            raise StorageError(f"cannot write to {where} ({e.strerror or e}); runs that finished stay in the "
                               "store: rerun with the output going where it can be written") from e


def encodable(text: str, stream: TextIO) -> str:
    """`text` as the stream can encode it. stdout's encoding follows the locale and PYTHONIOENCODING
    (ascii under LC_ALL=C with PYTHONUTF8=0, on many CI boxes and cron jobs) with errors=strict: the
    leaderboard's `mean ± std` raised UnicodeEncodeError after training, and the table was lost
    (stderr's backslashreplace printed `\\xb7` for `·`). memprox's symbols become ASCII (`+-`, `x`,
    `->`); any other character the stream cannot encode (a class or folder name) is written as its
    backslash escape, never dropped; a path's undecodable bytes go out as they came in (surrogateescape)."""
    encoding = getattr(stream, "encoding", None)
    if not isinstance(encoding, str):
        return text
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        pass
    except LookupError:  # an encoding Python does not know: print raises what it raises
        return text
    surrogates = getattr(stream, "errors", None) == "surrogateescape"
    return "".join(_encodable_char(c, encoding, surrogates) for c in text)


#: ASCII stand-ins for the symbols memprox prints, for a stream that cannot encode them.
_ASCII = {"±": "+-", "×": "x", "·": "-", "→": "->", "←": "<-", "…": "...", "—": "--", "–": "-", "−": "-",
          "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~"}


def _encodable_char(char: str, encoding: str, surrogates: bool) -> str:
    """The character; where the stream cannot encode it, its ASCII stand-in or backslash escape (`\\xe9`)."""
    for errors in ("strict", "surrogateescape") if surrogates else ("strict",):
        try:
            char.encode(encoding, errors)
            return char
        except UnicodeEncodeError:
            pass
    return _ASCII.get(char) or char.encode("ascii", "backslashreplace").decode("ascii")


def _target(stream: TextIO) -> str:
    """What the stream writes to, for the error line: a path, `a terminal` (also one hung up), or its name."""
    try:
        fd = stream.fileno()
        if os.isatty(fd):
            return "a terminal"
        path = os.readlink(f"/proc/self/fd/{fd}")
    except (OSError, ValueError):
        return str(getattr(stream, "name", "the output stream"))
    return "a terminal" if path.startswith(("/dev/pts/", "/dev/tty", "/dev/console")) else path


def main() -> int:
    """Take Ctrl-C back and handle SIGTERM and SIGHUP, then run the CLI; a signal during the imports
    ends it as after them (Ctrl-C quietly with 130, a stop signal with its line and 128 + its number).
    The handlers stay until the CLI returns; then these signals and Ctrl-C are ignored (`_ignore_stop_signals`),
    and a finished run notes one that came since its report's note (`RunOver`)."""
    take_back_ctrl_c()
    _received.clear()
    install_stop_signals()
    if not _cwd_exists():
        return 2
    drop_bad_thread_counts()
    try:
        from harness.cli import main as cli_main
    except KeyboardInterrupt:
        return stopped("" if stop_signal() is None else "interrupted; nothing was trained yet")
    _entry.append(True)
    try:
        return cli_main()
    except KeyboardInterrupt:  # arrived in the instant before or after the CLI's own handling
        return stopped(KEPT)
    finally:
        _entry.clear()
        try:
            over = _ignore_stop_signals()
        except KeyboardInterrupt:  # came after cli.main put its handler back, before these were ignored
            over = _ignore_stop_signals()
        if isinstance(over, RunOver):  # a finished run: a signal since its report's note is said now
            over.note()


#: The thread-count variables checked before torch loads (not `harness.jobs.THREAD_VARIABLES`, what a worker
#: sets), each -> how its reader takes it (`thread_count_read`). libgomp reads each comma-separated part with
#: strtoul: blanks around it and a `+` are taken, and a count past a C long is 'Invalid value' as is 0.
#: MKL_NUM_THREADS is read as before but for counts past a C int (MKL wraps 4294967297 to 1); MKL itself takes
#: digits alone (" 3" and "3,2" are 1 thread), which matters little here: workers get their counts from --threads.
_COUNT_FORMS = {"OMP_NUM_THREADS": (re.compile(r"\s*\+?([0-9]+)\s*", re.ASCII), 2**63 - 1),
                "MKL_NUM_THREADS": (re.compile(r"\s*([0-9]+)\s*", re.ASCII), 2**31 - 1)}


def thread_count_read(name: str, value: str) -> bool:
    """Whether the library that reads `name` takes `value` as the count written. A regex of positive whole
    numbers unset OMP_NUM_THREADS=+4, which libgomp reads as 4, saying it was ignored, and kept
    99999999999999999999, on which libgomp printed 'Invalid value' twice."""
    pattern, largest = _COUNT_FORMS[name]
    for part in value.split(","):
        found = pattern.fullmatch(part)
        if found is None or not 1 <= int(found.group(1)) <= largest:
            return False
    return True


def drop_bad_thread_counts() -> None:
    """Unset a thread-count variable its library does not read as a count (`thread_count_read`), before torch
    loads, with one line naming it: OpenMP ignored it anyway, printing `libgomp: Invalid value for environment
    variable OMP_NUM_THREADS` twice, naming no fix."""
    for name in _COUNT_FORMS:
        value = os.environ.get(name)
        if value is None or thread_count_read(name, value):
            continue
        del os.environ[name]
        print(f"warning: {name}={value!r} is not a positive whole number its library reads (too large ones are "
              f"not), so it is ignored (memprox sets each worker's torch threads by --threads); set it to a number "
              f"such as 1, or unset it", file=sys.stderr)


def _cwd_exists() -> bool:
    """Whether the current folder still exists; if not, says so. A shell left in a folder that was
    deleted (a finished job's scratch folder) got `Intel oneMKL FATAL ERROR: Cannot load
    libtorch_cpu.so` from importing torch, and the default --out (results/latest) has nowhere to go."""
    try:
        os.getcwd()
    except FileNotFoundError:
        write_line("error: the current folder no longer exists (deleted or moved); cd to an existing folder "
                   "and rerun", sys.stderr)
        return False
    return True


def _ignore_stop_signals() -> object:
    """The run is over and its exit code decided: a Ctrl-C, SIGTERM or SIGHUP now must not change it.
    Handled, it raised KeyboardInterrupt in an atexit callback (Ray's shutdown of the local Ray: a
    traceback after the final line, Ray half stopped, where a late Ctrl-C landed); once
    the interpreter's teardown had put the default back, a SIGTERM killed a finished run (exit 143).
    Ignored signals are the ones the teardown leaves alone. SIGINT's goes last: until then a SIGTERM
    still reaches a finished run's `RunOver`. Returns SIGINT's handler it replaced."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    return signal.signal(signal.SIGINT, signal.SIG_IGN)
