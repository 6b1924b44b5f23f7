"""Every node of a Ray cluster must train with the driver's memprox. A job is pickled on the driver
by reference (`harness.jobs.run_job`, its dataclasses) and trained by whatever memprox the node
imports: a node with another version or commit trained it with its own code, silently. On a
two-node `ray start` cluster here, a node whose SGD step differed (lr x 1.01) gave another
leaderboard with exit 0, and its runs were stored under the driver's spec, for later runs to reuse.

So each job first compares the node's code (`code_identity`: the version and a digest of the
sources of memprox's packages) with the driver's, and a node that differs returns a marker instead
of training; the driver ends the run with one line naming the fix (`check_outcome`). Not a job on
the driver's machine that imports memprox from the driver's folders (`code_install`; a local Ray):
the sources read there during a run differed from the driver's start whenever someone edited the
checkout meanwhile (a workflow this repository lives by), which failed a sound run. A `ray start`
from another environment on the same machine is compared: the host name alone let it through. The check is
pickled by value (nested functions: cloudpickle sends their code), so an older or newer memprox on
the node runs it all the same. A node without memprox cannot load a job at all; Ray's error for
that (ModuleNotFoundError while it unpickles the job) becomes one line as well. A node whose code is the
driver's but whose torch, numpy, scikit-learn or cleanlab differs trains, and is said in one warning line
(`ray_versions`, which says why that is not refused)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from harness.executors.base import JobFn, WorkersLost
from harness.executors.ray_versions import FAILED_WITH, OTHER, differences, package_versions

#: memprox's packages, whose sources make up its code identity.
PACKAGES = ("harness", "proxies", "baselines")
#: What a job returns instead of its result on a node whose memprox differs: (DIFFERS, the node's
#: identity, the driver's, the node's host name).
DIFFERS = "memprox-code-differs"
FIX = ("install this memprox (the same version and commit, and the modules the jobs use) on every node, "
       "then rerun; runs already stored are kept")


def _identity_fn() -> Callable[[], str]:
    def code_identity() -> str:
        """memprox's version and the first 16 hex digits of a SHA-256 of the .py files of its packages
        as this process finds them (their paths inside the package and their bytes)."""
        import hashlib
        import importlib.metadata
        import importlib.util
        import os

        digest = hashlib.sha256()
        for package in PACKAGES:
            spec = importlib.util.find_spec(package)
            for root in sorted(spec.submodule_search_locations or []) if spec else []:
                for folder, dirs, files in os.walk(root):
                    dirs.sort()
                    for name in sorted(f for f in files if f.endswith(".py")):
                        path = os.path.join(folder, name)
                        with open(path, "rb") as f:
                            digest.update(f"{package}/{os.path.relpath(path, root)}\0".encode() + f.read() + b"\0")
        try:
            version = importlib.metadata.version("memprox")
        except importlib.metadata.PackageNotFoundError:
            version = "(not installed)"
        return f"memprox {version}, code {digest.hexdigest()[:16]}"

    return code_identity


def _install_fn() -> Callable[[], tuple[str, ...]]:
    def code_install() -> tuple[str, ...]:
        """The folders this process imports memprox's packages from (resolved): which install it runs."""
        import importlib.util
        import os

        found = [importlib.util.find_spec(package) for package in PACKAGES]
        return tuple(os.path.realpath(root) for spec in found if spec for root in spec.submodule_search_locations or [])

    return code_install


#: Nested, so that cloudpickle sends their code to the node instead of a reference into memprox there.
code_identity = _identity_fn()
code_install = _install_fn()


def same_code(fn: JobFn, driver: str | None = None, host: str | None = None,
              install: tuple[str, ...] | None = None, versions: tuple[tuple[str, str], ...] | None = None) -> JobFn:
    """`fn`, run as it is on a node of host name `host` (default: this machine's) that imports memprox
    from the folders `install` (default: this process's), and on any other node only where its
    `code_identity` is `driver` (default: this process's); elsewhere the job returns (DIFFERS, the
    node's identity, the driver's, the node's host name) untrained. A worker on the driver's machine
    with another install (a `ray start` from another environment) is compared like a remote node.
    Where a node's `package_versions` differ from `versions` (default: this process's), also on the
    driver's install, it trains and returns (OTHER, the result, its host name, the differences)
    (`ray_versions`: a warning)."""
    driver, identity, where = driver or code_identity(), code_identity, code_install
    host, install = host or socket.gethostname(), install or code_install()
    mine, read, compare, mark = versions or package_versions(), package_versions, differences, FAILED_WITH

    def checked(job: Any) -> Any:
        import socket

        node = socket.gethostname()
        own = node == host and where() == install  # the driver's own install: edits mid-run are not a node's code
        if not own and (here := identity()) != driver:
            return (DIFFERS, here, driver, node)
        found = compare(read(), mine)  # every job (a worker with the driver's memprox and its own PYTHONPATH too)
        if not found:
            return fn(job)
        try:
            result = fn(job)
        except Exception as error:  # the versions may be why: the driver says them too (pickled with it)
            try:
                setattr(error, mark, (node, found))
            except Exception:  # an exception that takes no attributes: raised as it is
                pass
            raise
        return (OTHER, result, node, found)

    return checked


def check_outcome(outcome: Any, cluster: str) -> None:
    """Raise WorkersLost (one line, exit 1, stored runs kept) for the outcome of a job that ran on a
    node whose memprox differs from the driver's, or on a node that could not load the job for a
    missing module; other outcomes pass. `cluster`: " at HOST:PORT", or "" (a local Ray, the caller's)."""
    if differs(outcome):
        _, node, driver, host = outcome
        raise WorkersLost(f"a node of the Ray cluster{cluster} (host {host}) runs another memprox than this driver "
                          f"({node}; here: {driver}), and would train with other code; {FIX}")
    if missing := missing_module(outcome):
        what = ("memprox is not installed there, or not this one" if missing.partition(".")[0] in PACKAGES
                else f"a module the jobs use ({missing}) is not installed there")
        raise WorkersLost(f"a node of the Ray cluster{cluster} cannot load this run's jobs (No module named "
                          f"'{missing}'): {what}; {FIX}")


def missing_module(outcome: Any) -> str | None:
    """The module a node could not import to load a job (Ray's error for a failed unpickle), or None
    for any other outcome (a job that raised ModuleNotFoundError itself is the job's own failure)."""
    found = re.search(r"No module named '([^']+)'", str(outcome)) if _system_error(outcome) else None
    return found[1] if found else None


def differs(outcome: Any) -> bool:
    """Whether `outcome` is the marker of a node whose memprox differs (no result to store)."""
    return isinstance(outcome, tuple) and len(outcome) == 4 and isinstance(outcome[0], str) and outcome[0] == DIFFERS


def _system_error(outcome: Any) -> bool:
    """Ray's error for a job its worker could not load (a failed unpickle), not one the job raised."""
    return isinstance(outcome, BaseException) and type(outcome).__name__ == "RaySystemError"
