"""What the Ray executor needs around Ray itself (see `harness.executors.ray`): cluster addresses
checked in seconds (syntax, name resolution, a TCP connect), jobs no live node can hold refused, a
local Ray bound to the loopback interface, Ray's token file created private, and the reaper that
stops a local Ray's processes once the driver is gone. Standard library only at import; Ray is
imported where it is used."""

from __future__ import annotations

import os
import secrets
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.jobs import Job

#: Seconds for resolving a cluster's host name and for a TCP connect to it.
RESOLVE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
#: Marks the environment of every process of a local Ray this harness starts (the reaper's key).
SESSION_VAR = "MEMPROX_RAY_SESSION"
CLUSTER_HELP = "see 'Running on a cluster' in the README"

#: The reaper: waits for the driver's end of its stdin pipe to close (the driver exited or was
#: killed), then stops every process of that Ray: those whose environment carries the session mark
#: and every descendant of one (Ray's agents rewrite their environment area with their process
#: title, so the mark alone misses them at times; a descendant is known by its parent and start
#: time, seen when the driver says its Ray has started, every two seconds after, and at the end).
#: SIGTERM for two seconds, then SIGKILL, for at most ~15 s. Standard library only: it starts in
#: milliseconds.
_REAPER = r"""
import os, select, signal, sys, time
mark = sys.argv[1].encode()
me = os.getpid()
known = set()  # (pid, start time) of every process of the session seen so far

def table():
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open("/proc/%s/environ" % name, "rb") as f:
                marked = mark in f.read().split(b"\0")
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":  # a zombie is already dead
            procs[int(name)] = (int(fields[1]), fields[19], marked)
    return procs

def look():
    procs = table()
    known.update((pid, start) for pid, (_, start, marked) in procs.items() if marked)
    grew = True
    while grew:
        kids = {(pid, start) for pid, (ppid, start, _) in procs.items()
                if ppid in procs and (ppid, procs[ppid][1]) in known}
        grew = not kids <= known
        known.update(kids)
    return [pid for pid, (_, start, _) in procs.items() if (pid, start) in known]

while True:  # a byte from the driver (its Ray has started) or two quiet seconds: look again
    if select.select([sys.stdin], [], [], 2.0)[0] and not os.read(sys.stdin.fileno(), 4096):
        break
    look()

term_until = time.monotonic() + 2.0
quiet = 0
for _ in range(150):
    pids = look()
    quiet = 0 if pids else quiet + 1
    if quiet == 3:  # three empty looks in a row: no child was being forked during one of them
        break
    sig = signal.SIGTERM if time.monotonic() < term_until else signal.SIGKILL
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(0.1)
"""

# addresses ------------------------------------------------------------------------------------
def split_address(address: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT, [IPv6]:PORT or ray://HOST:PORT; HarnessError for anything else."""
    rest = address.removeprefix("ray://")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
        if ":" in host:
            host = ""  # an IPv6 address needs brackets, or the port is ambiguous
    if not host or any(c.isspace() for c in host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise HarnessError(f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, [::1]:6379) or auto; "
                           f"{CLUSTER_HELP}")
    return host, int(port)


def cluster_address(address: str) -> str:
    """The address to join: `address` itself, or for `auto` RAY_ADDRESS or the cluster `ray start`
    recorded on this machine. HarnessError when `auto` finds neither."""
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS", "")
    found = env if env not in ("", "auto", "local") else _recorded_cluster()
    if not found or found in ("auto", "local"):  # RAY_ADDRESS=auto (or local) names no cluster either
        said = f"RAY_ADDRESS is {env!r}, which names no cluster," if env else "RAY_ADDRESS is not set"
        raise HarnessError(f"--ray-address auto found no Ray cluster: {said} and no cluster started with `ray start` "
                           "is recorded on this machine; start one (`ray start --head`), pass --ray-address "
                           "HOST:PORT, or drop --ray-address to start a local Ray")
    if found == env:  # the user wrote `auto`: a malformed RAY_ADDRESS said "Ray address 'foo' is not HOST:PORT"
        try:
            split_address(env)
        except HarnessError:
            raise HarnessError(f"--ray-address auto reads RAY_ADDRESS, which is {env!r}: not HOST:PORT (e.g. "
                               "10.0.0.5:6379, [::1]:6379); fix or unset RAY_ADDRESS, or pass --ray-address "
                               f"HOST:PORT; {CLUSTER_HELP}") from None
    return found


def _recorded_cluster() -> str | None:
    """The address the last `ray start` on this machine recorded (Ray's temp dir), if any."""
    try:
        import ray

        return ray._private.utils.read_ray_address() or None
    except Exception:  # a private helper: any failure means nothing usable is recorded
        return None


def check_reachable(address: str) -> tuple[str, int]:
    """Resolve the host and open a TCP connection to the port, each with a short timeout, so a
    wrong address fails in seconds with one line instead of Ray's minutes of retries."""
    host, port = split_address(address)
    infos = _resolve(host, port, address)
    errors = []
    # a ray:// address is the head's Ray Client server, which `--port` (the GCS port) does not move
    flag = "--ray-client-server-port" if address.startswith("ray://") else "--port"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(CONNECT_TIMEOUT_S)
                s.connect(sockaddr)
                not_ray = _not_grpc(s)
        except OSError as e:
            errors.append(e.strerror or type(e).__name__)
            continue
        if not_ray:  # Ray would try such a port for minutes (5 attempts of ~40 s), then fail
            raise HarnessError(f"something answers at {address}, but not a Ray cluster ({not_ray}): pass the port "
                               f"Ray's head listens on (`ray start --head {flag}=PORT`); {CLUSTER_HELP}")
        return host, port
    raise HarnessError(f"no Ray cluster answers at {address} ({errors[0] if errors else 'no address'}): start it "
                       f"(`ray start --head {flag}={port}` on the head node) or fix --ray-address; {CLUSTER_HELP}")


#: The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, its Client
#: server) answers with a SETTINGS frame of its own, anything else (an HTTP/1 server, a database,
#: a port that accepts and says nothing) does not.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _not_grpc(s: socket.socket) -> str | None:
    """None when the connected socket `s` speaks gRPC (HTTP/2) as Ray's head does, else what it did
    instead. Not checked under TLS (RAY_USE_TLS), which a plain preface cannot reach."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    head = b""
    try:
        s.sendall(_H2_PREFACE)
        while len(head) < 9:  # one frame header: length (3), type (1: 4 is SETTINGS), flags, stream
            chunk = s.recv(9 - len(head))
            if not chunk:
                return f"it closed the connection{' after ' + repr(head[:40]) if head else ''}"
            head += chunk
    except TimeoutError:
        return f"no HTTP/2 answer within {CONNECT_TIMEOUT_S:.0f} s{' but ' + repr(head[:40]) if head else ''}"
    except OSError as e:
        return f"the connection failed: {e.strerror or type(e).__name__}"
    return None if head[3] == 4 else f"it answered {head[:40]!r}, not HTTP/2"


def _resolve(host: str, port: int, address: str) -> list:
    """getaddrinfo in a daemon thread: a resolver that hangs must neither block the run nor its exit."""
    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            result.append(e)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)
    if not result:
        raise HarnessError(f"the host of Ray address {address} did not resolve within {RESOLVE_TIMEOUT_S:.0f} s; "
                           "check the name or use the head node's IP address")
    if isinstance(result[0], OSError):
        reason = result[0].strerror or str(result[0])
        raise HarnessError(f"the host {host!r} of Ray address {address} does not resolve ({reason}); check the "
                           "name or use the head node's IP address")
    return result[0]


def check_fits(jobs: Sequence[Job]) -> None:
    """A job that no live node can hold waits in Ray's queue forever ("Pending Demands" in `ray
    status`), and memprox said nothing: `--threads 2` on 1-CPU nodes hung. Refused instead."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for resource, need, flag in (("CPU", max(j.num_cpus for j in jobs), "--threads"),
                                 ("GPU", max(j.num_gpus for j in jobs), "--gpus-per-run")):
        most = max((float(r.get(resource, 0.0)) for r in nodes), default=0.0)
        if need > most:
            raise HarnessError(f"each run asks for {need:g} {resource}(s) ({flag}), but the largest live node of the "
                               f"Ray cluster has {most:g}: no node can run it, and Ray would wait forever; lower "
                               f"{flag} or add a node with more {resource}s")


def _answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# a local Ray ----------------------------------------------------------------------------------
@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for what starts inside the block (Ray's processes inherit them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Make `ray.init` start its local cluster on 127.0.0.1, so that it listens on the loopback
    interface only. Ray takes a node address from the network unless it believes it runs on
    macOS or Windows (where it uses loopback to avoid firewall prompts), and maps an explicit
    `_node_ip_address="127.0.0.1"` back to the network address; this flag is the one switch.
    Ray's child processes read the variable, this process the constant it was read into."""
    import ray

    constants = ray._private.ray_constants
    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        with _environ(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"):
            yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved


def _gcs_address() -> str | None:
    """The head of the Ray this process is connected to (None: none, or a Ray Client connection). Not
    connected, `get_runtime_context` starts a local Ray of its own (a test's stand-in join did)."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return None


def token_file() -> Path:
    """Ray's default token file (the one `ray.init` creates for a new local cluster)."""
    return Path.home() / ".ray" / "auth_token"


def ensure_private_token() -> None:
    """Create Ray's token file before `ray.init` would, readable by this user only (Ray writes it
    with the umask's mode, 0644 by default: any local user could then use the local cluster).
    Only when Ray would create it: token mode (Ray's default) and no token given another way.
    An existing file is left as it is, with a warning if other users can read it."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    try:
        path = token_file()
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _warn_if_readable(path)
        return
    except (OSError, RuntimeError):  # no home folder: Ray reports the missing token itself
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes: 256 random bits


def _warn_if_readable(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        print(f"warning: Ray's token file {path} is readable by other users (mode {mode:04o}); "
              f"`chmod 600 {path}` keeps them off your local Ray", file=sys.stderr)


def _nudge_reaper(reaper: subprocess.Popen | None) -> None:
    """Tell the reaper to look at the session now (Ray has just started its processes), so that it
    knows their children before a sudden end of the driver takes their parents with it."""
    if reaper is not None and reaper.stdin is not None:
        try:
            reaper.stdin.write(b".")
            reaper.stdin.flush()
        except OSError:
            pass


def _start_reaper(mark: str) -> subprocess.Popen | None:
    """The reaper process (Linux: it reads /proc): in its own session, so Ctrl-C and a closed
    terminal do not stop it before it has done its work."""
    if not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER, mark], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "localhost")
