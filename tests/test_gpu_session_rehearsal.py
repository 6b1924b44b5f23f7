"""The GPU session's scripts, without a GPU: a device call is scarce (15 minutes, lent to some tasks
only), so a script regression must show up here, not there. Checks the shell syntax, the dataset
pack's byte-exact round trip and its size, and run_gpu_session.sh's budget logic with a stand-in
python whose benchmark stages never end (each stage stopped at its cap, the log and the summary
still written, every returned name plain)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    """A benchmarks/ script as a module (benchmarks/ is no package and stays off sys.path)."""
    spec = importlib.util.spec_from_file_location(f"_session_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pack_imagefolder = _script("pack_imagefolder")
summarize_gpu_session = _script("summarize_gpu_session")

needs_bash = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout") and shutil.which("tar")),
                                reason="needs bash, timeout and tar")
PLAIN = re.compile(r"^[A-Za-z0-9._-]+$")  # what a device call brings back from $OUT


def _tree(root: Path, per_class: int = 5) -> Path:
    """A tiny ImageFolder: 2 classes x per_class JPEGs in train/ and in test/ (20 images)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:05d}.jpg", quality=90)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_bash
@pytest.mark.parametrize("script", ["run_gpu_session.sh", "run_gpu_checks.sh", "run_gpu_full_cifar.sh"])
def test_scripts_parse_and_are_executable(script: str) -> None:
    path = BENCH / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert os.access(path, os.X_OK), f"{script} lost its executable bit (the session calls it directly)"


def test_pack_round_trip_is_byte_identical_and_compressed(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / pack_imagefolder.RAW_BLOB).write_bytes(b"an older pack's blob")
    assert pack_imagefolder.pack(src, pack, ["train", "test"]) == 20
    assert sorted(p.name for p in pack.iterdir()) == [pack_imagefolder.BLOB, pack_imagefolder.INDEX]
    raw = sum(len(b) for b in _files(src).values())
    assert (pack / pack_imagefolder.BLOB).stat().st_size < 0.8 * raw  # the repeated JPEG headers squeeze
    assert pack_imagefolder.unpack(pack, tmp_path / "out") == 20
    assert _files(tmp_path / "out") == _files(src)

    # a pack written before the zlib blob (images.bin) still unpacks
    blob = zlib.decompress((pack / pack_imagefolder.BLOB).read_bytes())
    (pack / pack_imagefolder.BLOB).unlink()
    (pack / pack_imagefolder.RAW_BLOB).write_bytes(blob)
    assert pack_imagefolder.unpack(pack, tmp_path / "old") == 20
    assert _files(tmp_path / "old") == _files(src)

    (pack / pack_imagefolder.RAW_BLOB).write_bytes(blob[:-1])
    with pytest.raises(SystemExit, match="repack"):
        pack_imagefolder.unpack(pack, tmp_path / "cut")


def test_per_class_cuts(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    assert pack_imagefolder.pack(src, tmp_path / "p", ["train", "test"], test_per_class=2, train_per_class=3) == 10


def _stand_in_python(tmp_path: Path) -> Path:
    """A python whose pytest and harness runs sleep past any cap; the pack and summary scripts are real."""
    stub = tmp_path / "python"
    stub.write_text(f"""#!/usr/bin/env bash
case "$*" in
  *pack_imagefolder.py*|*summarize_gpu_session.py*) exec {sys.executable} "$@" ;;
  *"-m pytest"*|*"-m harness"*|*bench_ray.py*) exec sleep 30 ;;
  *) echo "stand-in python: $*" ;;
esac
""")
    stub.chmod(0o755)
    return stub


@needs_bash
def test_session_stops_stages_at_the_budget_and_still_writes_what_finished(tmp_path: Path) -> None:
    pack_imagefolder.pack(_tree(tmp_path / "src"), tmp_path / "pack", ["train", "test"])
    (tmp_path / "benchmarks").symlink_to(BENCH)  # the session runs from a repository root
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": str(_stand_in_python(tmp_path)), "PACK": str(tmp_path / "pack"),
           "BUDGET_S": "4", "MIN_STAGE_S": "2", "SESSION_STAGES": "cuda_tests,full_cifar,gpu_packing,bench_fp32"}
    done = subprocess.run(["bash", str(BENCH / "run_gpu_session.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log = (out / "session.log").read_text()
    assert re.search(r"\[cuda_tests\] rc 124 in [3-6] s", log), log  # stopped at the 4 s left, not at its 120 s cap
    assert all(f"[{s}] skipped" in log for s in ("full_cifar", "gpu_packing", "bench_fp32")), log
    assert "[session]" in log
    summary = (out / "summary.md").read_text()
    assert "| cuda_tests | 124 (budget cap) |" in summary and "| bench_fp32 | skipped (budget) |" in summary
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    assert all(PLAIN.match(n) for n in names), names
    assert sorted(names) == ["checks.tgz", "full-cifar10.tgz", "session.log", "summary.md"]
    assert _files(tmp_path / ".gpu_data" / "cifar10") == _files(tmp_path / "src")  # unpacked in the background


@needs_bash
def test_session_refuses_an_unknown_stage_before_anything_runs(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "SESSION_STAGES": "cuda_tests,full_cifr"}
    done = subprocess.run(["bash", str(BENCH / "run_gpu_session.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "full_cifr" in done.stderr
    assert not (tmp_path / "out").exists()


def test_summary_of_a_folder_with_nothing_in_it(tmp_path: Path) -> None:
    text = summarize_gpu_session.summarize(tmp_path)
    assert "No session.log." in text and "unreadable" not in text
