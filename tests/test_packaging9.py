"""Packaging: what `pip install memprox` (not `-e`) ships, declares and exposes.

Why: CI installs editable (`pip install -e .`), so the working tree is what runs there. A module
left out of the wheel, a tests folder shipped into site-packages, a licence nobody can find, or a
dependency lower bound nobody ran only shows on a user's non-editable install. These tests build
the real wheel and sdist from a copy of the tree (no download: setuptools' own build backend, as
installed) and read pyproject.toml, so each of those is a failing test here instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; on 3.10 these checks run on the newer interpreters

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "proxies", "baselines")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Lower bounds run against, not guessed: on 2026-12-02 a fresh venv of exactly these versions
#: installed memprox's wheel and passed 15 test files (metrics, bootstrap, proxies, scoring,
#: confident learning, store, CLI, tracker, leaderboard, plots, data, training, near duplicates,
#: similarity, corruption) and the tiny CLI run, with the same scores as the newest versions.
#: Python 3.11 had pillow 9.3.0 (the first with cp311 wheels) and numpy 1.24.0; Python 3.10 had
#: pillow 9.1.0 and numpy 1.24.1. Raised on evidence: numpy 1.24.0 prints "invalid value
#: encountered in cast" on every run (pandas' to_csv of a NaN; numpy 1.24.1 fixed it); pillow 9.0
#: lacks `ImageMode...typestr` and `getpalette("RGB")`, so imagefolder and hf loading crashed.
#: Raise a bound here only together with pyproject.toml, after running the lower version.
VERIFIED_LOWER_BOUNDS = {
    "torch": "2.3",
    "torchvision": "0.18",
    "cleanlab": "2.6",
    "scikit-learn": "1.3",
    "scipy": "1.10",
    "numpy": "1.24.1",
    "pandas": "2.0",
    "tabulate": "0.9",
    "tqdm": "4.60",
    "matplotlib": "3.7",
    "pillow": "9.1",
    "filelock": "3.12",
}
#: The oldest Python run (3.10.13 with the lower bounds above), and what pyproject must say.
OLDEST_PYTHON = "3.10"


def _tree_sources() -> set[str]:
    """Every file of the three packages, as the wheel should name it (no caches)."""
    return {p.relative_to(ROOT).as_posix() for top in PACKAGES for p in (ROOT / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _copy_tree(dst: Path) -> Path:
    """The files a build reads, plus tests/ and a results/ file that must not ship: building in a
    copy leaves no build/ or egg-info in the working tree other people edit."""
    import shutil

    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)
    for top in (*PACKAGES, "tests"):
        shutil.copytree(ROOT / top, dst / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dst / "harness" / "__pycache__").mkdir()
    (dst / "harness" / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"")  # a cache left behind
    (dst / "results").mkdir()
    (dst / "results" / "leaderboard.csv").write_text("proxy\n")
    return dst


def _backend(src: Path, hook: str, out: Path) -> Path:
    """Run setuptools' PEP 517 hook `hook` in `src` (a subprocess: setuptools keeps global state)."""
    code = f"from setuptools import build_meta as b; print(b.{hook}({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "deprecated" not in done.stderr.lower(), done.stderr[-3000:]  # e.g. a TOML-table license
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and sdist of a copy of the tree, and a wheel built from that sdist."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot build memprox (pyproject's build-system)")
    base = tmp_path_factory.mktemp("build")
    (src := base / "src").mkdir()
    _copy_tree(src)
    dist = base / "dist"
    dist.mkdir()
    wheel, sdist = _backend(src, "build_wheel", dist), _backend(src, "build_sdist", dist)
    unpacked = base / "unpacked"
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, filter="data")
    (again := base / "again").mkdir()
    return {"wheel": wheel, "sdist": sdist, "from_sdist": _backend(next(unpacked.iterdir()), "build_wheel", again)}


def _dist_info(names: list[str]) -> str:
    return next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))


def test_the_wheel_ships_every_module_and_nothing_else(built: dict[str, Path]) -> None:
    """A module missing from the wheel fails only on a non-editable install, at its first import;
    tests, results and caches in site-packages would clash with other packages' files."""
    names = zipfile.ZipFile(built["wheel"]).namelist()
    info = _dist_info(names)
    shipped = {n for n in names if not n.startswith(info + "/")}
    assert shipped == _tree_sources()
    assert not [n for n in names if n.endswith(".pyc") or n.split("/")[0] in ("tests", "results", "build")]
    assert {n.split("/")[0] for n in names} == {*PACKAGES, info}
    assert f"{info}/licenses/LICENSE" in names


def test_the_wheel_metadata_names_licence_python_entry_point_and_bounds(built: dict[str, Path]) -> None:
    wheel = zipfile.ZipFile(built["wheel"])
    info = _dist_info(wheel.namelist())
    meta = wheel.read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    assert f"Requires-Python: >={OLDEST_PYTHON}" in meta
    assert "Description-Content-Type: text/markdown" in meta
    required = set(re.findall(r"^Requires-Dist: ([^;\n]+)$", meta, re.M))
    assert {f"{name}>={low}" for name, low in VERIFIED_LOWER_BOUNDS.items()} <= required
    scripts = wheel.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]\nmemprox = harness.console:main" in scripts


def test_the_sdist_holds_the_licence_and_builds_the_same_wheel(built: dict[str, Path]) -> None:
    """The sdist is what a user without a wheel (or a distribution packager) builds from. Its tests
    are left out: they read docs/, examples/ and benchmarks/, which it does not hold."""
    with tarfile.open(built["sdist"]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert {"LICENSE", "README.md", "pyproject.toml"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "results/")) or n.endswith(".pyc")]
    assert sorted(zipfile.ZipFile(built["from_sdist"]).namelist()) == sorted(zipfile.ZipFile(built["wheel"]).namelist())


def _bound(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement.replace(" ", ""))
    assert match, f"{requirement!r}: a runtime dependency is a plain lower bound (no cap, no pin, no marker)"
    return match[1].lower(), match[2]


def test_declared_lower_bounds_are_the_verified_ones() -> None:
    """Raising or lowering a bound in pyproject.toml without running it fails here (update the
    table above with what was run). No upper caps: a cap blocks users from every future fix."""
    declared = dict(_bound(r) for r in PYPROJECT["project"]["dependencies"])
    assert declared == VERIFIED_LOWER_BOUNDS


def test_quickstart_documents_the_verified_ranges() -> None:
    text = (ROOT / "docs" / "quickstart.md").read_text()
    missing = [f"{n}>={v}" for n, v in VERIFIED_LOWER_BOUNDS.items() if f"`{n}>={v}`" not in text]
    assert not missing, f"docs/quickstart.md does not list {missing}"
    assert f"Python {OLDEST_PYTHON}" in text


def test_licence_and_python_metadata_agree() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "memprox developers" in licence
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]  # PEP 639 `license` needs 77
    assert project["requires-python"] == f">={OLDEST_PYTHON}"
    minors = sorted(int(c.rsplit(".", 1)[1]) for c in project["classifiers"]
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert minors and minors[0] == int(OLDEST_PYTHON.split(".")[1]) and minors == list(range(minors[0], minors[-1] + 1))
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # refused next to an SPDX licence


def test_the_memprox_command_resolves_to_the_cli() -> None:
    assert PYPROJECT["project"]["scripts"] == {"memprox": "harness.console:main"}
    module, _, attr = PYPROJECT["project"]["scripts"]["memprox"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    try:
        installed = importlib.metadata.distribution("memprox").entry_points
    except importlib.metadata.PackageNotFoundError:
        return  # run from a checkout on PYTHONPATH: nothing installed to compare
    assert [ep.value for ep in installed if ep.group == "console_scripts" and ep.name == "memprox"] == [
        "harness.console:main"]


_IMPORT_ALL = """
import importlib, pkgutil, sys
optional = {"harness.integrations.lightning": "memprox[lightning]", "harness.integrations.transformers": "memprox[hf]"}
bad = []
for top in ("harness", "proxies", "baselines"):
    for mod in pkgutil.walk_packages(importlib.import_module(top).__path__, top + "."):
        if mod.name.endswith(".__main__"):
            continue  # runs the CLI
        try:
            importlib.import_module(mod.name)
        except ImportError as exc:  # an extra not installed: fine if the message says which
            if optional.get(mod.name, "<none>") not in str(exc):
                bad.append(f"{mod.name}: {exc!r}")
        except Exception as exc:
            bad.append(f"{mod.name}: {exc!r}")
print("\\n".join(bad) or "ok")
"""


def test_every_module_imports_from_another_directory(tmp_path: Path) -> None:
    """From a folder that is not the checkout, as a user runs it: a module that reads a file
    relative to the working directory, or imports a module the wheel lacks, fails here."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr[-2000:]
