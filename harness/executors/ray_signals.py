"""The signal handlers a command-line driver keeps while `ray.init` runs (see
`harness.executors.ray`): Ray replaces them with its own, which end the process without memprox's
line and exit code. Standard library only; the Ray module is passed in."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _keep_sigterm(handler: object) -> None:
    """Stands in for Ray's `set_sigterm_handler` during `ray.init`: the handler in place stays."""


@contextmanager
def _signals_kept(ray: Any) -> Iterator[None]:
    """Put back the signal handlers `ray.init` replaces: it takes SIGTERM for itself (the driver's
    `sys.exit(15)`, a local head's "kill Ray, exit 1"), so a scheduler's SIGTERM ended the CLI with
    no message and exit 1 or 15, and an API caller's own handler was gone. Ray's processes are
    reaped however this process ends (`_start_reaper`, Ray's own atexit). Ray's SIGTERM handlers are
    not even set while `ray.init` runs (seconds): a SIGTERM then exited 15 with no line. `ray`: the
    module (a stand-in in tests)."""
    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name)]
    main = threading.current_thread() is threading.main_thread()  # elsewhere no handler can be set
    saved = {sig: signal.getsignal(sig) for sig in signals} if main else {}
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    setter = getattr(utils, "set_sigterm_handler", None)  # how ray.init sets both of its SIGTERM handlers
    if setter is not None:
        utils.set_sigterm_handler = _keep_sigterm  # type: ignore[union-attr]
    try:
        yield
    finally:
        if setter is not None:
            utils.set_sigterm_handler = setter  # type: ignore[union-attr]
        for sig, handler in saved.items():  # set again even where Python's record still shows it: C code
            if handler is not None:          # (Ray's core worker) may have set its own underneath
                signal.signal(sig, handler)
