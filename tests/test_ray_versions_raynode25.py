"""A Ray node with another torch, numpy, scikit-learn or cleanlab than the driver's
(`harness.executors.ray_versions`): it trains, and the driver says one warning line per node naming
the host, the package, both versions and the consequence. Before, nothing checked or said it (the code
check, `ray_same_code`, compares memprox's own sources only)."""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors import ray_same_code  # noqa: E402
from harness.executors.ray_same_code import DIFFERS, same_code  # noqa: E402
from harness.executors.ray_versions import OTHER, NodeVersions, package_versions, warning_line  # noqa: E402
from harness.manifest import package_versions as manifest_versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NODE = "import pickle, sys; check = pickle.loads(sys.stdin.buffer.read()); print(repr(check('job')))"
_trained = lambda job: "trained"  # noqa: E731  (by value: a Ray worker cannot import this module)


def _torch_at(version: str) -> tuple[tuple[str, str], ...]:
    """This process's package versions with torch's replaced: a driver whose torch differs."""
    return tuple((p, version if p == "torch" else v) for p, v in package_versions())


def _on_node(check, code: Path) -> str:
    """What `check('job')` returns in a fresh process that imports memprox from `code`."""
    done = subprocess.run([sys.executable, "-c", NODE], input=cloudpickle.dumps(check), capture_output=True,
                          timeout=120, cwd=code, env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode().strip()


def test_the_versions_compared_are_those_the_manifests_record() -> None:
    recorded = manifest_versions()
    assert dict(package_versions()) == {p: recorded[p] for p in ("torch", "numpy", "scikit-learn", "cleanlab")}


def test_a_node_whose_torch_differs_trains_and_returns_its_versions_with_the_result() -> None:
    """The code is the driver's (this checkout), the host another's: compared like a remote node."""
    torch_here = dict(package_versions())["torch"]
    check = same_code(_trained, host="rj25-driver", versions=_torch_at("0.0.1"))
    assert check("job") == (OTHER, "trained", socket.gethostname(), (("torch", torch_here, "0.0.1"),))
    assert same_code(_trained, host="rj25-driver")("job") == "trained"  # the same versions: the bare result
    own = same_code(_trained, versions=_torch_at("0.0.1"))("job")  # the driver's own memprox: compared as well
    assert own == (OTHER, "trained", socket.gethostname(), (("torch", torch_here, "0.0.1"),))


def test_a_worker_of_the_drivers_own_memprox_with_other_package_metadata_is_compared(tmp_path) -> None:
    """As found on a token `ray start` head here whose PYTHONPATH held another torch's metadata: its jobs
    ran the driver's memprox (exempt from the code check), their manifests recorded torch 9.9.9, and
    nothing was said."""
    meta = tmp_path / "torch-9.9.9.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 9.9.9\n")
    done = subprocess.run([sys.executable, "-c", NODE], input=cloudpickle.dumps(same_code(_trained)),
                          capture_output=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    torch_here = dict(package_versions())["torch"]
    assert ast.literal_eval(done.stdout.decode().strip()) == (OTHER, "trained", socket.gethostname(),
                                                              (("torch", "9.9.9", torch_here),))


def test_the_versions_check_travels_by_value(tmp_path) -> None:
    """A node's own memprox need not have `ray_versions`: one whose code is older still returns the
    code marker (not an unpickling error); one with the driver's code returns the versions."""
    for package in ray_same_code.PACKAGES:
        shutil.copytree(REPO / package, tmp_path / "same" / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tmp_path / "same", tmp_path / "old")
    for name in ("ray_same_code.py", "ray_versions.py"):
        (tmp_path / "old" / "harness" / "executors" / name).unlink()
    driver = ast.literal_eval(_on_node(same_code(_trained, driver="x", host="rj25-driver"), tmp_path / "same"))[1]
    check = same_code(_trained, driver=driver, host="rj25-driver", versions=_torch_at("0.0.1"))
    marker, result, host, found = ast.literal_eval(_on_node(check, tmp_path / "same"))
    assert (marker, result, host) == (OTHER, "trained", socket.gethostname())
    assert found == (("torch", dict(package_versions())["torch"], "0.0.1"),)
    assert ast.literal_eval(_on_node(check, tmp_path / "old"))[0] == DIFFERS


def test_the_driver_says_one_line_per_node_and_keeps_the_results(capsys) -> None:
    notes = NodeVersions()
    found = (("torch", "2.5.1+cpu", "2.6.0"), ("numpy", "2.1.3", "2.2.0"))
    outcomes = [(OTHER, "r1", "gpu-3", found), (OTHER, "r2", "gpu-3", found), "r3", (OTHER, "r4", "gpu-4", found[:1])]
    assert [notes.result(o) for o in outcomes] == ["r1", "r2", "r3", "r4"]
    assert capsys.readouterr().err.splitlines() == [
        "warning: Ray node gpu-3 trains with torch 2.5.1+cpu and numpy 2.1.3, where this driver has torch 2.6.0 and "
        "numpy 2.2.0: its runs may differ from this machine's in float rounding (each run's manifest records the "
        "versions that trained it); install the same versions on every node for results that match",
        warning_line("gpu-4", found[:1])]
    assert notes.result((DIFFERS, "a", "b", "host")) == (DIFFERS, "a", "b", "host")  # the code marker: not ours


def test_results_found_finished_at_a_ctrl_c_are_unwrapped(capsys) -> None:
    executor = ray_executor.RayExecutor(workers=1)
    executor._finished = [("job0", executor._versions.result((OTHER, "result", "gpu-3", (("numpy", "1", "2"),))))]
    assert executor.take_finished() == [("job0", "result")]
    assert capsys.readouterr().err.count("warning: Ray node gpu-3 trains with numpy 1") == 1


def test_a_run_on_ray_whose_node_has_another_torch_trains_and_says_it_once(monkeypatch, capsys) -> None:
    """A local Ray; the driver stands in for another machine with another torch. The code identity is
    fixed here: other helpers may edit this checkout while the test runs."""

    @dataclass
    class _Job:  # defined here: cloudpickle sends it by value
        num_cpus: float = 1.0
        num_gpus: float = 0.0

        def label(self) -> str:
            return "rj25 job"

    monkeypatch.setattr(ray_same_code, "code_identity", lambda: "memprox rj25, code same")
    monkeypatch.setattr(ray_executor, "same_code",
                        functools.partial(same_code, host="rj25-driver", versions=_torch_at("0.0.1")))
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        executor = ray_executor.RayExecutor(progress=False, fn=_trained)
        capsys.readouterr()
        assert [outcome for _, outcome in executor.run([_Job(), _Job(), _Job()])] == ["trained"] * 3  # type: ignore[list-item]
        assert [outcome for _, outcome in executor.run([_Job()])] == ["trained"]  # type: ignore[list-item]
    finally:
        if started:
            ray.shutdown()
    torch_here = dict(package_versions())["torch"]
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: Ray node")]
    assert said == [warning_line(socket.gethostname(), (("torch", torch_here, "0.0.1"),))]


def test_the_line_cluster_md_quotes_is_the_codes() -> None:
    page = " ".join((REPO / "docs" / "cluster.md").read_text().split())
    quoted = re.findall(r"`(warning: Ray node [^`]*)`", page)
    assert quoted == [warning_line("gpu-3", (("torch", "2.5.1+cpu", "2.6.0"),))]
