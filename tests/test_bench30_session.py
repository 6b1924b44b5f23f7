"""The GPU session's scripts against today's tree (bench30), checked on the CPU because the device call
happens once, with no second chance:

- the CUDA stage of benchmarks/run_gpu_checks.sh must run every test that skips without CUDA; a test
  added later in another file (tests/test_tracker_copy_attackb26.py) or named `gpu` rather than `cuda`
  was never run on a GPU;
- benchmarks/rehearse_gpu_session.sh must measure what the call will carry with the session's own
  pack (every training image), not the small pack its CPU stages use: measured on the small pack it
  said 'within the 64 MiB' (49.6 MiB) while the real call would carry 64.9 MiB and be refused.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
needs_bash = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("tar") and shutil.which("git")),
                                reason="needs bash, tar and git")


def _skips_without_cuda(decorator: ast.expr) -> bool:
    """`@pytest.mark.skipif(not torch.cuda.is_available(), ...)`, however the reason is worded."""
    return (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("mark.skipif")
            and "cuda.is_available" in ast.unparse(decorator.args[0] if decorator.args else decorator))


def _cuda_only_tests() -> set[str]:
    """file::name of every test function in tests/ that skips where CUDA is absent."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        body = ast.parse(path.read_text()).body
        whole = any(isinstance(n, ast.Assign) and any(ast.unparse(t) == "pytestmark" for t in n.targets)
                    and _skips_without_cuda(n.value) for n in body)  # `pytestmark = pytest.mark.skipif(...)`
        for node in body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") \
                    and (whole or any(_skips_without_cuda(d) for d in node.decorator_list)):
                found.add(f"tests/{path.name}::{node.name}")
    return found


def _cuda_stage() -> tuple[list[str], str]:
    """The test files and the -k expression of run_gpu_checks.sh's `cuda)` stage, as the script has them."""
    text = (BENCH / "run_gpu_checks.sh").read_text()
    stage = text[text.index("    cuda)"):text.index(";;", text.index("    cuda)"))]
    command = " ".join(line.split("#")[0].rstrip(" \\") for line in stage.splitlines()[1:])
    words = shlex.split(command[command.index("-m pytest"):].split("2>&1")[0])
    files = [w for w in words if w.startswith("tests/")]
    return files, words[words.index("-k") + 1]


def test_the_cuda_stage_selects_every_test_that_needs_cuda() -> None:
    files, expression = _cuda_stage()
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-k", expression, *files], cwd=ROOT, capture_output=True, text=True)
    selected = {re.sub(r"\[.*\]$", "", line.strip()) for line in listed.stdout.splitlines() if "::" in line}
    needed = _cuda_only_tests()
    assert len(needed) >= 9  # the 9 of 2026-12-05; fewer means the search above broke
    assert needed - selected == set(), f"never run on a GPU: {sorted(needed - selected)}"


def _tree(root: Path, train: int, test: int) -> Path:
    """An ImageFolder of 2 classes of 64x64 noise JPEGs (~4.8 KB each: zlib cannot shrink them)."""
    rng = np.random.default_rng(30)
    for split, n in (("train", train), ("test", test)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i:05d}.jpg", quality=95)
    return root


def _pack_module():
    spec = importlib.util.spec_from_file_location("_bench30_pack", BENCH / "pack_imagefolder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_bash
def test_the_rehearsal_measures_the_carry_of_the_sessions_own_pack(tmp_path: Path) -> None:
    cifar = _tree(tmp_path / "cifar", train=60, test=15)
    full = tmp_path / "full"
    _pack_module().pack(cifar, full, ["train", "test"], 200, None)  # the session's own: every image
    full_mib = sum(f.stat().st_size for f in full.iterdir()) / 2**20
    # an unknown stage stops the session at once (exit 2): steps 1, 2 and 4 still run
    env = {**os.environ, "CIFAR": str(cifar), "PYTHON": sys.executable, "SESSION_STAGES": "none_bench30"}
    done = subprocess.run([str(BENCH / "rehearse_gpu_session.sh"), str(tmp_path / "rehearsal")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    carry = re.search(r"travel: working tree [\d.]+ MiB \+ carry ([\d.]+) MiB", done.stdout)
    assert carry, done.stdout[-2000:] + done.stderr[-2000:]
    # the small pack (30 + 10 a class) holds 80 of the 150 images: ~0.37 MiB against ~0.69 MiB
    assert full_mib > 0.6 and float(carry.group(1)) == pytest.approx(full_mib, abs=0.051)
    assert done.returncode == 1 and "rehearsal FAILED" in done.stderr  # the unknown stage fails it


def test_travel_over_the_limit_names_the_largest_folders() -> None:
    files = {"README.md": 5, "tests/a.py": 7, "tests/b.py": 8, "results/big/s.csv.gz": 40, "results/big/x/y": 2,
             "results/small/s.csv": 9, "harness/tracker/state.py": 1}
    assert _pack_module().largest_folders(files, 3) == [("results/big", 42), ("tests", 15), ("results/small", 9)]
