"""How many CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

`os.cpu_count()` counts the machine's CPUs, not this process's: a container limited to 2 CPUs on a
64-core host, or a job pinned with `taskset`, would start 64 workers and oversubscribe its share
(every parallel region of a thread that the scheduler parks waits for it). Both limits are read
here, once per call: the affinity mask (`os.sched_getaffinity`) and the CPU quota of the process's
cgroup and its ancestors (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from harness import cgroups
from harness.cgroups import cgroup_folders, read_text


def usable_cpus(root: Path | None = None, self_cgroup: Path | None = None) -> int:
    """CPUs this process may keep busy: affinity, capped by the cgroup quota rounded down (a quota
    of 1.5 CPUs is 1: a second thread would be throttled), at least 1. `root` and `self_cgroup` default
    to `harness.cgroups.CGROUP_ROOT` and `SELF_CGROUP` as they are at the call, so a test (or a check of a
    container's files) that points those at other files sizes the pool, its warning and inprocess's
    from them; bound at import as defaults, they reached only a direct call with arguments."""
    count = affinity_cpus()
    quota = cgroup_cpu_quota(root, self_cgroup)
    if quota is not None:
        count = min(count, math.floor(quota))
    return max(1, count)


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path | None = None, self_cgroup: Path | None = None) -> float | None:
    """The smallest CPU quota (in CPUs) over this process's cgroup and its ancestors, v2 or v1;
    None when there is none (no cgroups, `max`, -1) or nothing is readable."""
    root = cgroups.CGROUP_ROOT if root is None else root
    self_cgroup = cgroups.SELF_CGROUP if self_cgroup is None else self_cgroup
    limits = [q for d in _cgroup_dirs(root, self_cgroup) if (q := _quota(d)) is not None]
    return min(limits) if limits else None


def _cgroup_dirs(root: Path, self_cgroup: Path) -> list[Path]:
    """Folders whose CPU limits apply (`harness.cgroups`), and `root` always: cgroup v2 in a container, or
    a v2-only host without /proc/self/cgroup."""
    return list(dict.fromkeys([root, *cgroup_folders(read_text(self_cgroup) or "", "cpu", root)]))


def _quota(folder: Path) -> float | None:
    try:
        if (folder / "cpu.max").is_file():
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100_000)
        if (folder / "cpu.cfs_quota_us").is_file():
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
            return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError, ZeroDivisionError):  # unreadable or malformed: no limit known
        return None
    return None
