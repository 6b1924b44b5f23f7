"""What comes back from the GPU session, checked before a device call: the summary's recording-cost
table (both cases of test_bench_recording.py), the check that $OUT would come back whole from a
device call, and the rehearsal's python, which imports only what the device has."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
_spec = importlib.util.spec_from_file_location("_rehearsal20_summary", BENCH / "summarize_gpu_session.py")
summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summary)


def _tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _bench(name: str, **info: object) -> dict:
    return {"name": name, "extra_info": info}


def test_the_recording_cost_has_its_own_table_with_both_cases(tmp_path: Path) -> None:
    recording = {"benchmarks": [
        _bench("test_csl_recording_overhead", model="mlp", device="cuda", epochs=10, rounds=3, ratio_paired=1.02,
               overhead_inloop=0.004, target_met=False),
        _bench("test_all_training_pass_recorders_overhead", model="mlp", device="cuda", epochs=10, rounds=3,
               ratio_paired=1.3, overhead_inloop=0.12, target_met=False)]}
    loop = {"benchmarks": [_bench("test_loop_vs_bare_loop", precision="fp32", epochs=1, rounds=2, ratio_wall=0.8,
                                  ratio_loop=1.0, bare_images_per_s=21400.0, memprox_images_per_s=16800.0,
                                  model="resnet18", n=50000, batch=512, device="cuda", target_met=False)]}
    ensemble = {"benchmarks": [_bench("test_models_per_hour[resnet18]", model="resnet18", n=10000, device="cuda")]}
    _tgz(tmp_path / "checks.tgz", {"checks/recording.json": json.dumps(recording).encode(),
                                   "checks/fp32.json": json.dumps(loop).encode(),
                                   "checks/zz_conv_ensemble.json": b"{}",
                                   "checks/conv_ensemble.json": json.dumps(ensemble).encode()})
    text = summary.summarize(tmp_path)
    rec = text.split("#### Recording cost")[1].split("####")[0]
    assert "| csl (`train_loss`) | mlp | cuda | 10 | 3 | 1.02 |" in rec
    assert "| 4 training-pass recorders | mlp | cuda | 10 | 3 | 1.3 |" in rec
    loops = text.split("#### Training loop benchmarks")[1].split("####")[0]
    assert "recording" not in loops  # not mixed into the CSL-on-ResNet table any more
    assert "Sizes: model resnet18, n 50000, batch 512, device cuda." in loops  # the loop's, not the ensemble's


def _session_out(root: Path, scores: str = "noise=0.1_seed0.csv.gz") -> Path:
    (root / "session.log").write_text("[cuda_tests] rc 0 in 3 s\n")
    _tgz(root / "checks.tgz", {"checks/env.txt": b"torch 2.11 cuda True NVIDIA H200\n"})
    _tgz(root / "full-cifar10.tgz", {f"full/full-cifar10-mislabeled/scores/{scores}": gzip.compress(b"sample\n")})
    return root


def test_a_whole_out_folder_comes_back(tmp_path: Path) -> None:
    out = _session_out(tmp_path)
    assert summary.returned_problems(out) == []
    assert "All of it comes back from a device call." in summary.summarize(out)


def test_what_a_device_call_would_not_bring_back_is_named(tmp_path: Path) -> None:
    out = _session_out(tmp_path, scores="noise=0.1_seed0.csv")
    (out / "big.bin").write_bytes(b"\0" * (16 * 2**20 + 1))
    (out / "a b.txt").write_text("x")
    (out / "one" / "two" / "three").mkdir(parents=True)
    (out / "one" / "two" / "three" / "deep.txt").write_text("x")
    for i in range(4):
        (out / f"extra{i}.log").write_text("x")
    problems = "; ".join(summary.returned_problems(out))
    assert "big.bin: 16.0 MiB, over 16" in problems
    assert "a b.txt: name not of letters" in problems
    assert "one/two/three/deep.txt: more than two folders down" in problems
    assert "10 files, over 8" in problems
    assert "full/full-cifar10-mislabeled/scores/noise=0.1_seed0.csv: per-sample scores not gzipped" in problems
    done = subprocess.run([sys.executable, str(BENCH / "summarize_gpu_session.py"), str(out), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "big.bin" in done.stderr
    assert "**Would not come back:**" in done.stdout


def test_the_rehearsal_python_imports_what_the_device_has(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH / "device_env")}
    probe = ("import importlib\n"
             "for name in ('cleanlab', 'ray', 'datasets', 'harness'):\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "        print(name, 'imported')\n"
             "    except ModuleNotFoundError:\n"
             "        print(name, 'missing')\n"
             "import torch, numpy, pandas, sklearn, scipy, PIL, filelock, tqdm, tabulate, pytest\n")
    outside = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert outside.returncode == 0, outside.stderr
    assert outside.stdout.split("\n")[:3] == ["cleanlab missing", "ray missing", "datasets missing"]
    spec = importlib.util.find_spec("harness")
    if spec is not None and spec.origin and Path(spec.origin).is_relative_to(ROOT):  # a source (editable) install
        # memprox only where the device finds it: on sys.path (the repository root), never through the install
        assert outside.stdout.split("\n")[3] == "harness missing"
    inside = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert inside.stdout.split("\n")[3] == "harness imported", inside.stderr


def _cuda_stage_files() -> list[str]:
    script = (BENCH / "run_gpu_checks.sh").read_text()
    stage = script.split("    cuda)")[1].split(";;")[0]
    return [f for line in stage.splitlines() if not line.strip().startswith("#")
            for f in re.findall(r"tests/\w+\.py", line)]


def test_every_file_of_the_cuda_stage_imports_on_the_device() -> None:
    """A test module that imports a package the device lacks at its top fails pytest's collection
    there, and without --continue-on-collection-errors the whole stage of CUDA tests with it.
    tests/test_score_checks8.py imported cleanlab at its top and was left out of the stage, with its
    CUDA test; it now imports cleanlab inside the one test that needs it."""
    files = _cuda_stage_files()
    assert {"tests/test_ensemble.py", "tests/test_score_checks8.py"} <= set(files)
    env = {**os.environ, "PYTHONPATH": str(BENCH / "device_env")}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-k", "cuda", *files], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "test_a_cuda_bf16_tensor_that_requires_grad_comes_back_to_the_host" in done.stdout
    lacking = subprocess.run([sys.executable, "-c", "import cleanlab"], env=env, capture_output=True, text=True)
    assert lacking.returncode != 0  # the device-like Python has no cleanlab, as the device


def test_the_rehearsal_passes_no_flag_the_experiment_script_gives_already() -> None:
    """The CLI refuses a flag given twice, so a rehearsal EXTRA repeating one of
    run_gpu_full_cifar.sh's flags fails the experiment (--checkpoint-every did)."""
    command = (BENCH / "run_gpu_full_cifar.sh").read_text().split("-m harness run")[1].split("${EXTRA")[0]
    extra = re.search(r'EXTRA="([^"]*)"', (BENCH / "rehearse_gpu_session.sh").read_text()).group(1)
    assert set(re.findall(r"--[a-z-]+", extra)) & set(re.findall(r"--[a-z-]+", command)) == set()
