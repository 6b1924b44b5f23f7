"""A Ctrl-C, SIGTERM or SIGHUP in the last instants of a finished run (the fuzz campaign of the session
before: a signal in the last ~0.1-0.8 s of `python -m harness run` exited 0 without the `note:` line).

Where it went: `cmd_run` checked its handler (`RunOver`) for a signal right after the report, so one
that came after that check, while `harness.cli.main` returned, was kept and never said; `cli.main` then
put Python's handler back, and one in the instant before `harness.console.main` ignored the signals
raised KeyboardInterrupt there: exit 130 (143 for SIGTERM) and "interrupted; ... rerun to resume" for
a run whose outputs were all written. After `console.main`, while Python exits (the interpreter's
teardown: most of that ~0.8 s), the signals are ignored: exit code the run's, no line (documented in
docs/reliability.md). The signals are injected at the exact points: the window is too narrow to hit.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import harness.cli as cli
from harness import console

RUN = ["run", "--dataset", "digits", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates",
       "0.1", "--epochs", "1", "--subset", "200", "--device", "cpu", "--bootstrap", "0", "--executor", "inprocess",
       "--no-progress"]
HANDLED = (signal.SIGINT, *console.STOP_SIGNALS)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: the first run trains, the others reuse it."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def handlers() -> Iterator[None]:
    """The handlers and the record of stop signals as they were before the test (console.main ignores them)."""
    saved = {sig: signal.getsignal(sig) for sig in HANDLED}
    console._received.clear()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (xdist ignores it)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for sig, handler in saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        console._received.clear()


def argv(store: Path, out: Path) -> list[str]:
    return [*RUN, "--store", str(store), "--out", str(out)]


def note(sig: int, out: Path) -> str:
    what = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
    return f"note: {what} came after every output was written to {out}: the run is complete (exit code 0, as " \
           "without it)"


def then_signal(call: Callable[[], int], sig: int) -> Callable[[], int]:
    """`call`, then `sig` sent to this process once it returned (before what called it goes on)."""

    def called() -> int:
        code = call()
        signal.raise_signal(sig)
        return code

    return called


def test_a_ctrl_c_as_cmd_run_returns_is_noted_by_cli_main(store, tmp_path, monkeypatch, capsys, handlers) -> None:
    """After the report's own check, before `cli.main` returns to its caller: kept silently before."""
    real = cli.cmd_run
    monkeypatch.setattr(cli, "cmd_run", lambda args: then_signal(lambda: real(args), signal.SIGINT)())
    assert cli.main(argv(store, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert err.count(note(signal.SIGINT, tmp_path / "out")) == 1, err[-2000:]  # before: no note
    assert "interrupted" not in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_as_the_cli_returns_to_the_entry_keeps_the_exit_code_and_is_noted(
        sig, store, tmp_path, monkeypatch, capsys, handlers) -> None:
    """After `cli.main` returned, before `console.main` ignores the signals: exit 130, 143 or 129 with
    "interrupted"/"stopped by" before, for a run whose outputs were all written."""
    out = tmp_path / "out"
    real = cli.main
    monkeypatch.setattr(cli, "main", then_signal(lambda: real(argv(store, out)), sig))
    assert console.main() == 0
    err = capsys.readouterr().err
    assert err.count(note(sig, out)) == 1, err[-2000:]
    assert "interrupted" not in err and "stopped by" not in err and "Traceback" not in err, err[-2000:]
    assert [signal.getsignal(s) for s in HANDLED] == [signal.SIG_IGN] * 3  # the process's exit: ignored


def test_a_signal_during_the_report_is_noted_once(store, tmp_path, monkeypatch, capsys, handlers) -> None:
    """The report's own note is not said again by the entry's (one line for one signal)."""
    out = tmp_path / "out"
    real_report = cli.report_run

    def report(*args):  # type: ignore[no-untyped-def]
        signal.raise_signal(signal.SIGTERM)
        real_report(*args)

    monkeypatch.setattr(cli, "report_run", report)
    real = cli.main
    monkeypatch.setattr(cli, "main", lambda: real(argv(store, out)))
    assert console.main() == 0
    err = capsys.readouterr().err
    assert err.count("came after every output was written") == 1 and note(signal.SIGTERM, out) in err, err[-2000:]


def test_run_over_notes_once_with_the_exit_code_it_was_given(capsys, handlers) -> None:
    from harness.console import RunOver

    over = RunOver()
    over.note()
    over(signal.SIGINT, None)
    over.note()  # the report is still printing: its end says it
    assert capsys.readouterr().err == ""
    over.finish(1, " to /x")
    over.note()
    over(signal.SIGINT, None)  # another: not raised (the report is over), not said again
    over.note()
    assert capsys.readouterr().err == "note: Ctrl-C came after every output was written to /x: the run is " \
                                      "complete (exit code 1, as without it)\n"
