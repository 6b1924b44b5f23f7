"""Ctrl-C in the instant before the CLI returns (issue 20): once the outputs are written the run is
over, yet a Ctrl-C (or SIGTERM) while the report printed ended it with exit 130 and "interrupted;
runs that finished are kept in the store, rerun to resume", for a run whose files were all there.

Decided: from the moment the outputs are written, the exit code is the run's (0, or 1 for failures).
A first Ctrl-C is noted and the report goes on; a second cuts the report short (a stdout that blocks
must not hold the process); a line on stderr says the run is complete. The signal arrives
deterministically: the leaderboard's printing raises it, after the outputs exist.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness.leaderboard as leaderboard
import harness.outputs  # noqa: F401  (bound to the real `markdown` before any test patches it)
from harness import console
from harness.cli import main as cli_main

RUN = ["run", "--dataset", "digits", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates",
       "0.1", "--epochs", "1", "--subset", "200", "--device", "cpu", "--bootstrap", "0", "--executor", "inprocess",
       "--no-progress"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: the first run trains, the others reuse it."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def clean_record() -> Iterator[None]:
    console._received.clear()
    yield
    console._received.clear()


def signals_while_printing(monkeypatch: pytest.MonkeyPatch, out: Path, *signals: int) -> None:
    """The leaderboard's printing raises `signals` (once the outputs are written) before it returns."""
    real = leaderboard.markdown

    def markdown(frame):  # type: ignore[no-untyped-def]
        if (out / "leaderboard.csv").is_file():  # the report's call, not the one writing leaderboard.md
            for sig in signals:
                signal.raise_signal(sig)
        return real(frame)

    monkeypatch.setattr(leaderboard, "markdown", markdown)


def run(store: Path, out: Path) -> int:
    return cli_main([*RUN, "--store", str(store), "--out", str(out)])


def test_a_ctrl_c_after_the_outputs_are_written_keeps_exit_0_and_the_report(
        store, tmp_path, monkeypatch, capsys, clean_record) -> None:
    signals_while_printing(monkeypatch, tmp_path / "out", signal.SIGINT)
    assert run(store, tmp_path / "out") == 0  # before: 130
    out, err = capsys.readouterr()
    assert "| csl" in out and "leaderboard: " in out  # the report went on
    assert f"note: Ctrl-C came after every output was written to {tmp_path / 'out'}: the run is complete " \
           "(exit code 0, as without it)" in err
    assert "interrupted" not in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back


def test_a_second_ctrl_c_cuts_the_report_short_and_the_exit_code_stands(
        store, tmp_path, monkeypatch, capsys, clean_record) -> None:
    signals_while_printing(monkeypatch, tmp_path / "out", signal.SIGINT, signal.SIGINT)
    assert run(store, tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "| csl" not in out and "leaderboard: " not in out  # cut where the second one came
    assert f"note: the report was cut short; the run is complete, every output written to {tmp_path / 'out'}" in err
    assert "interrupted" not in err and (tmp_path / "out" / "leaderboard.csv").is_file()


def test_a_sigterm_after_the_outputs_are_written_is_named_and_exits_0(
        store, tmp_path, monkeypatch, capsys, clean_record) -> None:
    signals_while_printing(monkeypatch, tmp_path / "out", signal.SIGTERM)
    assert run(store, tmp_path / "out") == 0  # before: 143, "stopped by SIGTERM; ... rerun the same command"
    err = capsys.readouterr().err
    assert "note: SIGTERM came after every output was written" in err and "stopped by" not in err
