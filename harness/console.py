"""The entry of `memprox` and `python -m harness`: everything here runs before torch is imported.

A shell starts a script's background job (`memprox run ... &`) with SIGINT ignored, and Python
then never raises KeyboardInterrupt. memprox promises that Ctrl-C always stops a run (exit 130,
stored runs kept), so the handler is taken back first: importing `harness.cli` (torch) takes 2 s
on an idle machine and 20 s on a loaded one, and a `kill -INT` in that window was lost.
"""

from __future__ import annotations

import signal


def take_back_ctrl_c() -> None:
    """Restore Python's SIGINT handler when the process started with SIGINT ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread: the embedding program owns signals
            pass


def main() -> int:
    """Take Ctrl-C back, then run the CLI; Ctrl-C during the imports exits 130 quietly, as after them."""
    take_back_ctrl_c()
    try:
        from harness.cli import main as cli_main
    except KeyboardInterrupt:
        return 130
    return cli_main()
