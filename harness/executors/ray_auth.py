"""Whether the Ray cluster memprox joined (`--ray-address`) enforces token authentication, said in
one warning line when it does not. Before, memprox joined a head started without it silently: anyone
who reaches such a head's port can run code on every node (docs/cluster.md).

The driver's own settings cannot tell: with RAY_AUTH_MODE=token it sends its token to any head, and an
open head takes the connection all the same. So a separate process asks the head for its cluster id,
as every Ray client does first, with RAY_AUTH_MODE=disabled: then Ray sends no token, not even one in
RAY_AUTH_TOKEN or the token file (checked with Ray 2.60). A head that enforces tokens refuses it with
AuthenticationError; an open one answers. Anything else (a timeout, another error, an older Ray without
token authentication) says nothing: it is not known. The same check as docs/cluster.md's by hand
(`RAY_AUTH_MODE=disabled ray status --address=HEAD_IP:6379`). Not for a `ray://` Ray Client address,
whose port is not the head's GCS."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from harness.console import write_line
from harness.errors import StorageError

#: Seconds the separate process may take (it imports Ray; the head has just answered the driver).
PROBE_WAIT_S = 30.0
#: The separate process: "token" (refused without a token), "open" (answered), or "unknown".
PROBE = """
import sys
try:
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError
except ImportError:
    print("unknown"); raise SystemExit
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    print("token")
except Exception:
    print("unknown")
else:
    print("open")
"""
#: The environment variables of Ray's token, which the separate process must not have.
TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def open_cluster(address: str) -> bool | None:
    """Whether the head at `address` (its GCS: HOST:PORT) answers a request that carries no token:
    True (no token authentication), False (refused: it enforces tokens), None (not known)."""
    env = {name: value for name, value in os.environ.items() if name not in TOKEN_VARS}
    env["RAY_AUTH_MODE"] = "disabled"
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, address], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=PROBE_WAIT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    # bytes, read leniently: text=True decoded strictly, and a byte that was not UTF-8 (Ray's or a
    # site hook's output) raised UnicodeDecodeError out of the join, after it had joined
    said = done.stdout.decode("utf-8", "replace").split()
    return {"open": True, "token": False}.get(said[-1] if said else "")


def warn_if_open(address: str, gcs: str | None) -> None:
    """One warning line on stderr when the cluster joined at `address` (its head's GCS at `gcs`; None:
    not known, as for a `ray://` address) answers without a token."""
    if gcs and not address.startswith("ray://") and open_cluster(gcs):
        # write_line: with stderr closed (`2>&-`) print(file=None) wrote the line into stdout, the
        # leaderboard's stream; a stderr that refuses it (EPIPE, a full disk) drops it, the run goes on
        with contextlib.suppress(StorageError, ValueError):
            write_line(f"warning: the Ray cluster at {address} does not use token authentication (its head "
                       "answered a request without a token): anyone who reaches its port can run code on every "
                       "node; restart its nodes with RAY_AUTH_MODE=token and one token (docs/cluster.md, A "
                       "cluster)", sys.stderr)
