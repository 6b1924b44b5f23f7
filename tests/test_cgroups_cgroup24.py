"""harness.cgroups: the one parser of /proc/self/cgroup that the CPU quota (harness.executors.cpus) and
the memory limit (harness.search_memory) both read, so they agree on which folders bind the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cgroups, search_memory
from harness.executors import cpus

ROOT = Path("/sys/fs/cgroup")
V2 = "0::/user.slice/job/step\n"
V1 = "12:memory:/docker/abc\n4:cpuacct,cpu:/docker/abc\n1:name=systemd:/docker/abc\n"


def _chain(mount: Path, *rel: str) -> list[Path]:
    return [mount.joinpath(*rel[:i]) for i in range(len(rel), -1, -1)]


def test_v2_gives_the_own_folder_its_parents_and_the_root_for_any_controller() -> None:
    expected = _chain(ROOT, "user.slice", "job", "step") + _chain(ROOT / "unified", "user.slice", "job", "step")
    assert cgroups.cgroup_folders(V2, "memory") == expected
    assert cgroups.cgroup_folders(V2, "cpu") == expected


def test_v1_gives_the_controllers_hierarchy_only() -> None:
    assert cgroups.cgroup_folders(V1, "memory") == _chain(ROOT / "memory", "docker", "abc")
    # listed as the kernel orders them, mounted as systemd names them: both read, and cpu alone
    assert cgroups.cgroup_folders(V1, "cpu") == [
        *_chain(ROOT / "cpu", "docker", "abc"), *_chain(ROOT / "cpuacct,cpu", "docker", "abc"),
        *_chain(ROOT / "cpu,cpuacct", "docker", "abc")]
    assert cgroups.cgroup_folders(V1, "pids") == []
    assert cgroups.cgroup_folders("", "cpu") == []


def test_the_root_path_is_its_mount_once() -> None:
    assert cgroups.cgroup_folders("0::/\n", "cpu", Path("/c")) == [Path("/c"), Path("/c/unified")]
    assert cgroups.cgroup_folders("3:memory:/\n", "memory", Path("/c")) == [Path("/c/memory")]


@pytest.mark.parametrize("text", [V2, V1])
def test_both_callers_read_the_shared_folders(tmp_path, monkeypatch, text) -> None:
    """cpus reads the folders under its root argument (and the root itself); the memory check reads
    /proc/self/cgroup through search_memory._read and asks for each folder's limit files."""
    own = tmp_path / "self"
    own.write_bytes(text.encode())
    root = tmp_path / "cg"
    assert cpus._cgroup_dirs(root, own) == list(dict.fromkeys([root, *cgroups.cgroup_folders(text, "cpu", root)]))
    asked: list[str] = []

    def read(path: str) -> str | None:
        asked.append(path)
        return text if path == "/proc/self/cgroup" else None

    monkeypatch.setattr(search_memory, "_read", read)
    assert search_memory._cgroup_room() is None
    limits = [p.rsplit("/", 1)[0] for p in asked if p.endswith(("/memory.max", "/memory.limit_in_bytes"))]
    assert list(dict.fromkeys(limits)) == [str(f) for f in cgroups.cgroup_folders(text, "memory")]


def test_read_text_decodes_as_paths_are(tmp_path) -> None:
    (tmp_path / "cgroup").write_bytes(b"0::/caf\xe9/job\n")
    assert cgroups.read_text(tmp_path / "cgroup") == "0::/caf\udce9/job\n"
    assert cgroups.read_text(tmp_path / "missing") is None
