"""The memory check's cgroup cap reads the process's own cgroup and its ancestors: a limit set on a
parent (a Slurm job's, with "max" on its step's own cgroup) bounds the process too, and the check
took the machine's memory there (it stopped at the first cgroup folder it could read)."""

from __future__ import annotations

from harness import search_memory
from harness.search_memory import available_bytes

GIB = 2**30
MEMINFO = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n"


def test_a_parents_limit_caps_what_is_available(monkeypatch) -> None:
    job = "/sys/fs/cgroup/system.slice/job_7"
    files = {"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/system.slice/job_7/step_0\n",
             f"{job}/step_0/memory.max": "max\n", f"{job}/step_0/memory.current": "1073741824\n",
             f"{job}/memory.max": "4294967296\n", f"{job}/memory.current": "2147483648\n",
             f"{job}/memory.stat": "inactive_file 1073741824\n"}
    monkeypatch.setattr(search_memory, "_read", files.get)
    assert available_bytes() == 3 * GIB  # the job's 4 GiB - 2 GiB used + 1 GiB of reclaimable cache


def test_the_smallest_room_of_own_and_parent(monkeypatch) -> None:
    own, parent = "/sys/fs/cgroup/memory/a/b", "/sys/fs/cgroup/memory/a"
    files = {"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "4:memory:/a/b\n",
             f"{own}/memory.limit_in_bytes": str(8 * GIB), f"{own}/memory.usage_in_bytes": str(GIB),
             f"{parent}/memory.limit_in_bytes": str(6 * GIB), f"{parent}/memory.usage_in_bytes": str(4 * GIB)}
    monkeypatch.setattr(search_memory, "_read", files.get)
    assert available_bytes() == 2 * GIB  # the parent's room, not the own cgroup's 7 GiB


def test_a_cgroup_name_not_in_the_locales_encoding_is_read(tmp_path) -> None:
    """`/proc/self/cgroup` names the cgroup's folders, in bytes: one that did not decode was read as
    no file, and the limit went unchecked (harness.executors.cpus decodes it as paths are too)."""
    cgroup = tmp_path / "cgroup"
    cgroup.write_bytes(b"0::/user.slice/caf\xe9/job\n")
    text = search_memory._read(str(cgroup))
    assert text is not None and text.startswith("0::/user.slice/caf") and text.endswith("/job\n")
