"""Wall time of a digits sub-grid with the local executor vs a local Ray, and Ray's per-job overhead.

    python benchmarks/bench_ray.py                     # local pool (2 workers), ray 2 workers, ray 1 worker
    python benchmarks/bench_ray.py --epochs 40 --configs local2,ray2
    python benchmarks/bench_ray.py --configs gpu1,gpu025 --no-overhead --epochs 20 \
        --grid "--dataset imagefolder:DIR --tasks mislabeled --proxies csl --seeds 4 --device cuda --no-progress"

Each configuration runs `python -m harness run` in a fresh process on a fresh store (Ray's start-up
is inside the measured time), on the same grid, by default digits, `--tasks mislabeled,duplicates
--proxies all`, 3 seeds = 15 settings x (1 base + 2 SSFT + 3 folds) = 90 runs (`--grid` replaces
it). The outputs of every configuration are compared byte for byte with the earlier ones (equal
thread counts give equal bytes on a CPU; 2 threads vs 1 differ at rounding level, and GPU kernels
need not be bitwise repeatable). Then Ray's overhead per job is measured with a no-op job function
through the same executor (`--no-overhead` skips it). Prints a markdown table and writes JSON.

On a GPU, `gpu1` (one run on the GPU at a time) against `gpu025` (`--gpus-per-run 0.25`: four runs
share the GPU) measures what packing small runs onto one GPU buys; `local_gpu1` and `local_gpu025`
measure the same with the local executor's pool (1 / --gpus-per-run workers), which needs no Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["--tasks", "mislabeled,duplicates", "--proxies", "all", "--seeds", "3", "--device", "cpu", "--no-progress"]
CONFIGS = {
    "local2": ["--executor", "local", "--workers", "2"],  # the default on 2 CPUs: 2 workers x 1 thread
    "local1": ["--executor", "local", "--workers", "1"],
    "local1x2": ["--executor", "local", "--workers", "1", "--threads", "2"],  # one run at a time, 2 threads
    "ray2": ["--executor", "ray", "--workers", "2", "--threads", "1"],
    "ray1": ["--executor", "ray", "--workers", "1", "--threads", "1"],
    "gpu1": ["--executor", "ray", "--gpus-per-run", "1", "--threads", "1"],
    "gpu025": ["--executor", "ray", "--gpus-per-run", "0.25", "--threads", "1"],
    # the same without Ray (the device image has none): the local pool runs 1 / --gpus-per-run workers on a GPU
    "local_gpu1": ["--executor", "local", "--gpus-per-run", "1", "--threads", "1"],
    "local_gpu025": ["--executor", "local", "--gpus-per-run", "0.25", "--threads", "1"],
}


def run_grid(name: str, epochs: int, root: Path, grid: list[str]) -> dict:
    out, store = root / name / "out", root / name / "store"
    cmd = [sys.executable, "-m", "harness", "run", *grid, "--epochs", str(epochs), "--out", str(out),
           "--store", str(store), *CONFIGS[name]]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"config": name, "wall_s": wall, "trained": len(summary["trained"]), "out": str(out)}


def _noop(job):
    from harness.jobs import JobResult

    return JobResult()


def job_overhead(n: int = 200) -> dict:
    """Seconds per no-op job through RayExecutor (2 workers) and InProcessExecutor, after a warm-up."""
    import ray

    from harness.executors.inprocess import InProcessExecutor
    from harness.executors.ray import RayExecutor
    from harness.jobs import DataSource, Job
    from harness.recipe import Recipe
    from harness.runspec import DataSpec, RunSpec

    job = Job(specs=(RunSpec(DataSpec(), "mlp", Recipe(), 0),), requests=(), engine="single",
              source=DataSource("digits"))
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter() - t0
    ex = RayExecutor(workers=2, progress=False, fn=_noop)
    list(ex.run([job] * 20))  # warm-up: worker processes started, function exported
    t0 = time.perf_counter()
    list(ex.run([job] * n))
    ray_s = (time.perf_counter() - t0) / n
    ray.shutdown()
    local = InProcessExecutor(progress=False, fn=_noop)
    t0 = time.perf_counter()
    list(local.run([job] * n))
    return {"ray_init_s": start, "ray_per_job_s": ray_s, "local_per_job_s": (time.perf_counter() - t0) / n}


def same_outputs(a: str, b: str) -> bool:
    names = ["leaderboard.csv", "raw.csv", *sorted(f"scores/{p.name}" for p in (Path(a) / "scores").iterdir())]
    return all((Path(a) / n).read_bytes() == (Path(b) / n).read_bytes() for n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--configs", default="local2,ray2,ray1")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid", default=shlex.join(GRID), help="the experiment's flags, as one string")
    p.add_argument("--no-overhead", action="store_true", help="skip the no-op job overhead measurement")
    a = p.parse_args()
    unknown = set(a.configs.split(",")) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configs {sorted(unknown)}; valid: {', '.join(CONFIGS)}")
    grid = shlex.split(a.grid)
    results = {"epochs": a.epochs, "cpus": os.cpu_count(), "grid_flags": shlex.join(grid),
               "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_grid(name, a.epochs, Path(tmp), grid) for name in a.configs.split(",")]
        ref = runs[0]
        for i, r in enumerate(runs):
            r["speedup_vs_first"] = ref["wall_s"] / r["wall_s"]
            r["identical_to"] = [q["config"] for q in runs[:i] if same_outputs(q["out"], r["out"])]
        for r in runs:
            del r["out"]
    results["grid"] = runs
    results["overhead"] = None if a.no_overhead else job_overhead()
    results["load_after"] = os.getloadavg()
    print(f"`{shlex.join(grid)}`, {a.epochs} epochs; {os.cpu_count()} CPUs; "
          f"load average before {results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f}")
    print("| config | runs trained | wall (s) | speedup vs first | outputs byte-identical to |")
    print("|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['config']} | {r['trained']} | {r['wall_s']:.1f} | {r['speedup_vs_first']:.2f}x | "
              f"{', '.join(r['identical_to']) or '-'} |")
    o = results["overhead"] or {}
    if o:
        print(f"Ray: init {o['ray_init_s']:.1f} s; per no-op job {1000 * o['ray_per_job_s']:.2f} ms "
              f"(local executor {1000 * o['local_per_job_s']:.3f} ms)")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
