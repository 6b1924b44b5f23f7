"""A Ray node whose torch, numpy, scikit-learn or cleanlab differs from the driver's is said, once per
node, in one warning line; it is not refused. Before, nothing checked or said it.

Why a warning and not a refusal like `ray_same_code`'s: a node with other memprox code trains another
algorithm under the driver's spec, and nothing records which code trained a run; a node with another
torch trains the same algorithm, and its runs may differ from the driver machine's in float rounding
(a kernel, a reduction order), the kind of difference memprox already lets nodes have (another thread
count, CPU kernel set or GPU), and each run's manifest records the versions that trained it (`versions`,
written on the node), as it records the machine. A refusal would also fail sound clusters: a GPU node's
torch `2.6.0+cu124` beside a CPU node's `2.6.0+cpu`, a numpy patch release. A version whose API memprox
cannot use fails the job itself, with the node named and its line said (`FAILED_WITH`). Python's and
Ray's versions are Ray's to check (Ray 2.60's `check_version_info` refuses a node or driver whose
Python or Ray differs from the head's).

Compared on the node by each job's code check (`ray_same_code.same_code`) where the code is the
driver's (else the run ends anyway), also where the job imports memprox from the driver's own folders:
a `ray start` here with its own PYTHONPATH ran memprox from them with another torch's metadata first on
its path, whose version the run's manifests recorded, and nothing was said. A node that differs
returns (OTHER, the job's result, its host name, the differing packages); the driver takes
the result out and says the line (`NodeVersions`), once per node and difference for the executor.
The node's side is pickled by value, as the code check is: a node's older memprox runs it too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from harness.console import write_line
from harness.errors import StorageError
from harness.manifest import FLOAT_PACKAGES

#: The packages whose versions can change a run's numbers (the manifest records them, with Python's
#: and memprox's: memprox's code is `ray_same_code`'s check).
PACKAGES = FLOAT_PACKAGES
#: What a job returns, instead of its bare result, on a node whose versions differ from the driver's:
#: (OTHER, the result, the node's host name, ((package, the node's version, the driver's), ...)).
OTHER = "memprox-other-versions"
#: One difference: (package, the node's version, the driver's).
Difference = tuple[str, str, str]
#: The attribute a job's exception carries from such a node: (its host name, the differences). The
#: versions may be why it failed (an API memprox cannot use), and a node whose every job failed was
#: otherwise never said; an attribute, so the job's failure is reported as it was raised.
FAILED_WITH = "memprox_node_versions"


def _versions_fn() -> Callable[[], tuple[tuple[str, str], ...]]:
    def package_versions() -> tuple[tuple[str, str], ...]:
        """(package, version) of each of PACKAGES installed here, "not installed" for a missing one:
        from the installed metadata, as the run manifests record them (`harness.manifest`)."""
        import importlib.metadata

        found = []
        for package in PACKAGES:
            try:
                found.append((package, importlib.metadata.version(package)))
            except importlib.metadata.PackageNotFoundError:
                found.append((package, "not installed"))
        return tuple(found)

    return package_versions


#: Nested, so that cloudpickle sends its code to the node (see `ray_same_code.code_identity`).
package_versions = _versions_fn()


def _differences_fn() -> Callable[[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]],
                                  tuple[Difference, ...]]:
    def differences(node: tuple[tuple[str, str], ...],
                    driver: tuple[tuple[str, str], ...]) -> tuple[Difference, ...]:
        """(package, the node's version, the driver's) of each package whose versions differ."""
        theirs = dict(driver)
        return tuple((package, version, theirs.get(package, "not installed")) for package, version in node
                     if version != theirs.get(package, "not installed"))

    return differences


differences = _differences_fn()


def other_versions(outcome: Any) -> bool:
    """Whether `outcome` is a result wrapped by a node whose package versions differ."""
    # the str check first: a job's own 4-tuple led by an array compared element-wise (ValueError)
    return isinstance(outcome, tuple) and len(outcome) == 4 and isinstance(outcome[0], str) and outcome[0] == OTHER


def warning_line(host: str, found: tuple[Difference, ...]) -> str:
    """The line said for a node whose package versions differ (`found`, not empty)."""
    node = " and ".join(f"{package} {version}" for package, version, _ in found)
    driver = " and ".join(f"{package} {version}" for package, _, version in found)
    return (f"warning: Ray node {host} trains with {node}, where this driver has {driver}: its runs may differ "
            "from this machine's in float rounding (each run's manifest records the versions that trained it); "
            "install the same versions on every node for results that match")


class NodeVersions:
    """The driver's side: each job's result out of its wrapper, with the node's line said once per
    node and difference (on stderr), not once per job."""

    def __init__(self) -> None:
        self.said: set[tuple[str, tuple[Difference, ...]]] = set()

    def result(self, outcome: Any) -> Any:
        """The job's result in `outcome`; any other outcome (an exception the job raised included,
        said as well where it ran on such a node: `FAILED_WITH`) as it is."""
        if isinstance(outcome, BaseException):
            failed = getattr(outcome, FAILED_WITH, None)
            if isinstance(failed, tuple) and len(failed) == 2:
                self._say(*failed)
            return outcome
        if not other_versions(outcome):
            return outcome
        _, result, host, found = outcome
        self._say(host, found)
        return result

    def _say(self, host: str, found: tuple[Difference, ...]) -> None:
        """The line, once; a stderr that refuses it (`2>&1 | head` gone: EPIPE; a full disk) drops it.
        It is said in `RayExecutor.run`'s `finally` too, before the outstanding jobs are stopped: a
        BrokenPipeError there skipped the stop, and the jobs ran on."""
        if (host, found) not in self.said:
            self.said.add((host, found))
            with contextlib.suppress(StorageError, ValueError):  # ValueError: a closed stream
                write_line(warning_line(host, found), sys.stderr)
