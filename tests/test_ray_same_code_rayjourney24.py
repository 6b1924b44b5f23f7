"""A Ray node on another machine must train with the driver's memprox (`harness.executors.ray_same_code`).

On a two-node `ray start` cluster (the second node in mount and host-name namespaces of its own, with
another copy of memprox's code at the same path), a node whose SGD step differed gave another leaderboard than
`--executor inprocess`, with exit 0, and its runs were stored under the driver's spec; a node
without memprox failed each job with Ray's whole unpickling traceback as the failure line. Each
job on another host checks its node's code first (the check travels by value, so a node with an
older memprox runs it too), and either node ends the run with one line naming the fix."""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402

import harness.executors.ray as ray_executor  # noqa: E402
from harness.executors import ray_same_code  # noqa: E402
from harness.executors.base import WorkersLost  # noqa: E402
from harness.executors.ray_same_code import DIFFERS, check_outcome, code_identity, same_code  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Runs the pickled check as a Ray worker would, in a process whose memprox is the copy on PYTHONPATH.
NODE = "import pickle, sys; check = pickle.loads(sys.stdin.buffer.read()); print(repr(check('job')))"


#: The job function: a lambda, which cloudpickle sends by value (a fresh process cannot import this module).
_trained = lambda job: "trained"  # noqa: E731


def _on_node(check, code: Path) -> str:
    """What `check('job')` returns in a fresh process that imports memprox from `code`."""
    payload = cloudpickle.dumps(check)
    done = subprocess.run([sys.executable, "-c", NODE], input=payload, capture_output=True, timeout=120,
                          cwd=code, env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode().strip()


def _copy(to: Path, without: str | None = None) -> Path:
    for package in ray_same_code.PACKAGES:
        shutil.copytree(REPO / package, to / package, ignore=shutil.ignore_patterns("__pycache__"))
    if without:
        (to / without).unlink()
    return to


def test_a_node_with_the_drivers_code_trains_and_one_with_an_older_copy_returns_the_marker(tmp_path) -> None:
    """The driver's code is a copy of this checkout (its identity read on the node: the checkout may
    change meanwhile); the older copy lacks ray_same_code.py itself (a memprox from before the check)
    and one line more in its recipe module: the check still runs there, by value, and nothing is
    trained. Each check is sent as Ray sends it (cloudpickle)."""
    same = _copy(tmp_path / "same")
    asked = same_code(_trained, driver="memprox 0, code 0", host="rj24-driver")
    marker, driver, said, _host = ast.literal_eval(_on_node(asked, same))
    assert (marker, said) == (DIFFERS, "memprox 0, code 0") and driver.startswith("memprox ")
    check = same_code(_trained, driver=driver, host="rj24-driver")
    assert _on_node(check, same) == "'trained'"
    old = _copy(tmp_path / "old", without="harness/executors/ray_same_code.py")
    recipe = old / "harness" / "recipe.py"
    recipe.write_text(recipe.read_text() + "\nLR_SCALE = 1.01  # another commit's line\n")
    marker, node, said, _host = ast.literal_eval(_on_node(check, old))
    assert (marker, said) == (DIFFERS, driver) and node != driver and node.startswith("memprox ")


def test_on_the_drivers_own_machine_the_sources_are_not_compared() -> None:
    """A local Ray imports the driver's install; its sources read mid-run differ from the driver's
    start whenever the checkout is edited meanwhile, which must not fail a sound run."""
    assert same_code(_trained, driver="memprox 0, code 0")("job") == "trained"


def test_on_the_drivers_machine_another_install_is_compared() -> None:
    """A `ray start` from another environment on the driver's machine (an older memprox in the
    system Python) trained with its own code unchecked, as the host name alone exempted it."""
    import socket

    other = same_code(_trained, driver="memprox 0, code 0", install=("/elsewhere/site-packages/harness",))
    marker, node, driver, host = other("job")
    assert (marker, driver, host) == (DIFFERS, "memprox 0, code 0", socket.gethostname())
    assert node == code_identity()
    assert same_code(_trained, install=("/elsewhere/site-packages/harness",))("job") == "trained"  # same code


def test_the_identity_follows_every_source_file_of_the_packages(tmp_path, monkeypatch) -> None:
    package = tmp_path / "rj24pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "step.py").write_text("LR = 0.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ray_same_code, "PACKAGES", ("rj24pkg",))
    first = code_identity()
    (package / "notes.txt").write_text("not code")
    assert code_identity() == first
    (package / "sub" / "step.py").write_text("LR = 0.2\n")
    changed = code_identity()
    (package / "sub" / "step.py").write_text("LR = 0.1\n")
    assert changed != first and code_identity() == first
    (package / "sub" / "extra.py").write_text("")
    assert code_identity() != first


def test_the_marker_and_a_missing_module_end_the_run_with_the_fix() -> None:
    with pytest.raises(WorkersLost, match=r"\(host gpu-3\) runs another memprox than this driver \(memprox 0.1.0, "
                                          r"code aaa; here: memprox 0.1.0, code bbb\).*install this memprox"):
        check_outcome((DIFFERS, "memprox 0.1.0, code aaa", "memprox 0.1.0, code bbb", "gpu-3"), " at 10.0.0.5:6379")
    unloadable = ray.exceptions.RaySystemError(ModuleNotFoundError("No module named 'harness'"), "Traceback ...")
    with pytest.raises(WorkersLost, match=r"cluster at 10.0.0.5:6379 cannot load this run's jobs \(No module named "
                                          r"'harness'\): memprox is not installed there.*install this memprox"):
        check_outcome(unloadable, " at 10.0.0.5:6379")
    plugin = ray.exceptions.RaySystemError(ModuleNotFoundError("No module named 'my_proxies'"), "Traceback ...")
    with pytest.raises(WorkersLost, match=r"a module the jobs use \(my_proxies\) is not installed there"):
        check_outcome(plugin, "")
    check_outcome(ModuleNotFoundError("No module named 'torchvision'"), "")  # the job's own: reported, not the run's
    check_outcome(("a", "result"), "")


def test_a_marker_found_finished_at_a_ctrl_c_is_not_stored() -> None:
    executor = ray_executor.RayExecutor(workers=1)
    executor._finished = [("job0", (DIFFERS, "a", "b", "host")), ("job1", "result")]  # type: ignore[list-item]
    assert executor.take_finished() == [("job1", "result")]


def test_a_run_on_ray_whose_node_differs_ends_with_one_line(monkeypatch) -> None:
    """A local Ray; the driver stands in for another memprox on another machine, so its worker differs."""

    @dataclass
    class _Job:  # defined here: cloudpickle sends it by value (Ray's worker cannot import this module)
        num_cpus: float = 1.0
        num_gpus: float = 0.0

        def label(self) -> str:
            return "rj24 job"

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setattr(ray_executor, "same_code",
                            functools.partial(same_code, driver="memprox 0, code 0", host="rj24-driver"))
        executor = ray_executor.RayExecutor(progress=False, fn=_trained)
        with pytest.raises(WorkersLost, match=r"runs another memprox than this driver \(memprox .*; here: memprox 0, "
                                              r"code 0\)"):
            list(executor.run([_Job()]))  # type: ignore[list-item]
        monkeypatch.undo()
        assert [outcome for _, outcome in executor.run([_Job()])] == ["trained"]  # type: ignore[list-item]
    finally:
        if started:
            ray.shutdown()


def test_the_lines_cluster_md_quotes_are_the_codes() -> None:
    """The page quotes both lines with the cluster HEAD_IP:6379, cut at '...': each is the start of
    what check_outcome says (the page's text reflowed)."""
    page = " ".join((REPO / "docs" / "cluster.md").read_text().split())
    quoted = re.findall(r"`error: (a node of the Ray cluster [^`]*?) \.\.\.`", page)
    assert len(quoted) == 2, quoted
    said = []
    for outcome in ((DIFFERS, "memprox 0.1.0, code dcd065dab70f5850", "memprox 0.1.0, code 9453f952a6b62087",
                     "gpu-3"),
                    ray.exceptions.RaySystemError(ModuleNotFoundError("No module named 'harness'"), "")):
        with pytest.raises(WorkersLost) as lost:
            check_outcome(outcome, " at HEAD_IP:6379")
        said.append(str(lost.value))
    assert all(line.startswith(quote) for line, quote in zip(said, quoted)), (said, quoted)
