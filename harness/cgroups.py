"""The cgroup folders whose limits apply to this process, from /proc/self/cgroup.

A limit set on any of them binds the process: its own cgroup's, a parent's (a Slurm job's, above its
step's "max"), or the hierarchy's root (a container sees its own cgroup there, while /proc may show the
host's path, not mounted inside). The CPU quota (`harness.executors.cpus`) and the memory limit
(`harness.search_memory`) both read them from here, so the two cannot disagree on which folders count.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def read_text(path: str | Path) -> str | None:
    """The file's text, decoded as paths are: a cgroup name not valid in the locale's encoding (in
    /proc/self/cgroup) was a decode error, read as no file, and the cgroup's limit went unchecked."""
    try:
        return os.fsdecode(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def cgroup_folders(self_cgroup: str, controller: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """For each hierarchy holding `controller` in the text of /proc/self/cgroup (v2's `0::/path`, mounted
    at `root` or, on a hybrid host, `root`/unified; v1's `N:cpu,cpuacct:/path`, mounted at `root`/cpu,
    `root`/cpu,cpuacct or as listed): the process's own folder, then its parents, then the mount root.
    Each folder once, in that order."""
    folders: list[Path] = []
    for line in self_cgroup.splitlines():
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        names = controllers.split(",")
        if number == "0" and not controllers:
            mounts = [root, root / "unified"]
        elif controller in names:
            mounts = [root / controller, root / controllers, root / ",".join(sorted(names))]
        else:
            continue
        rel = Path(path.strip().lstrip("/"))
        for mount in mounts:
            folders += [mount / rel, *[mount / parent for parent in rel.parents]]
    return list(dict.fromkeys(folders))
