"""Issue 17's speed and memory figures, each printed with the machine's state, in one command.

    python benchmarks/bench_speed.py                               # every figure (~25 min on 2 cores)
    python benchmarks/bench_speed.py --only default,concurrent     # some of them
    python benchmarks/bench_speed.py --only epoch --cifar /path/to/cifar10 --json epoch.json
    python benchmarks/bench_speed.py --only epoch --epoch-model resnet9_quarter --epoch-variants batch128_channels_last

Figures (each run is `python -m harness run` in a fresh process on a fresh store, digits unless said):
- `default`: the README's main command (`--proxies all`, every task), wall seconds and the run's
  own `phase_seconds`. Target: <= 150 s on 2 idle cores; work after training <= 10 % of training.
- `concurrent`: one small experiment (`--proxies csl --tasks mislabeled --seeds 1`, 4 runs) alone,
  then two of them started at once: each should finish within 2x the time of one alone. The same
  for the pre-issue-17 default (`--executor inprocess --threads 2`: torch's 2 threads, in-process).
- `load`: the same small experiment beside a heavy neighbour (LOAD_PROCS processes at nice 19, each a
  2-thread torch loop, like a test suite of low-priority harness and Ray processes): the default
  against `--executor inprocess --threads 1`, the best setting before issue 17 (target <= 1.3), and
  against the old default (`--executor inprocess --threads 2`).
- `proxies`: 9 single-run proxies vs 1 on fresh stores, idle and under the same load (target <= 1.3).
- `epoch`: one epoch of small_cnn (or --epoch-model) on the full CIFAR-10 training set (--cifar, an
  image folder) in this process on one thread: batch 64 row-major (the quick preset's step), batch
  64 and 128 channels-last (the cpu-full layout), and compiled. Target <= 80 s for small_cnn.
- `memory`: a full-CIFAR-10 experiment with 2 workers (1 epoch, 2 seeds, csl): peak of the summed
  proportional set size (PSS, shared pages counted once) of the driver and its workers, sampled
  every 0.2 s. Target < 8 GiB.

Time nothing on a busy machine: the state line says what else ran (load average, the busiest other
processes); the `load` and `proxies` figures make their own load and stop it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1"]
NINE = ("csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability")
OLD_DEFAULT = ["--executor", "inprocess", "--threads", "2"]
BEST_BEFORE = ["--executor", "inprocess", "--threads", "1"]
LOAD_PROCS = 3
LOAD_SCRIPT = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(256, 256)\n"
               "while True:\n    (a @ a).sum().item()\n")


def machine_state() -> dict:
    """CPUs, load average and the busiest other processes right now (from `ps`)."""
    from harness.executors.cpus import usable_cpus

    busy = subprocess.run(["ps", "-eo", "pcpu,ni,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
    others = [line.split(None, 2) for line in busy.splitlines()[1:6]]
    import torch

    return {"cpus": os.cpu_count(), "usable_cpus": usable_cpus(), "loadavg_1m": os.getloadavg()[0],
            "python": platform.python_version(), "torch": torch.__version__,
            "busiest": [f"{c} {pcpu}% nice {ni}" for pcpu, ni, c in others if float(pcpu) >= 5.0]}


def harness_run(args: list[str], root: Path, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "harness", "run", *args, "--no-progress", "--out", str(root / name / "out"),
           "--store", str(root / name / "store")]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed(procs: list[subprocess.Popen]) -> list[float]:
    """Wall seconds of processes started together, each to its own end."""
    t0 = time.perf_counter()
    ends = [0.0] * len(procs)

    def wait(i: int, p: subprocess.Popen) -> None:
        _, err = p.communicate()
        ends[i] = time.perf_counter() - t0
        if p.returncode != 0:
            print(f"run failed ({p.returncode}):\n{err[-2000:]}", file=sys.stderr)

    threads = [threading.Thread(target=wait, args=(i, p)) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(p.returncode != 0 for p in procs):
        raise SystemExit("a benchmark run failed")
    return ends


def fresh(root: Path, name: str, args: list[str]) -> float:
    return timed([harness_run(args, root, name)])[0]


class Load:
    """LOAD_PROCS nice-19 processes of 2-thread torch work beside the measured runs."""

    def __enter__(self) -> Load:
        self.procs = [subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", LOAD_SCRIPT])
                      for _ in range(LOAD_PROCS)]
        time.sleep(3)  # past their imports
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


# figures -------------------------------------------------------------------------------------------
def bench_default(root: Path) -> dict:
    wall = fresh(root, "default", ["--proxies", "all"])
    summary = json.loads((root / "default" / "out" / "summary.json").read_text())
    phases = summary.get("phase_seconds", {})
    after = sum(v for k, v in phases.items() if k in ("score", "evaluate", "write"))
    return {"wall_s": wall, "phase_seconds": phases, "runs_trained": len(summary.get("trained", [])),
            "after_training_over_training": after / phases["train"] if phases.get("train") else None}


def bench_concurrent(root: Path) -> dict:
    out = {}
    for label, extra in (("default", []), ("old_default", OLD_DEFAULT)):
        alone = fresh(root, f"c-{label}-alone", SMALL + extra)
        both = timed([harness_run(SMALL + extra, root, f"c-{label}-{i}") for i in (0, 1)])
        out[label] = {"alone_s": alone, "two_at_once_s": both, "worst_ratio": max(both) / alone}
    return out


def bench_load(root: Path) -> dict:
    with Load():
        default = fresh(root, "l-default", SMALL)
        best = fresh(root, "l-best", SMALL + BEST_BEFORE)
        old = fresh(root, "l-old", SMALL + OLD_DEFAULT)
    return {"default_s": default, "inprocess_threads1_s": best, "old_default_s": old,
            "default_over_threads1": default / best, "old_default_over_threads1": old / best}


def bench_proxies(root: Path) -> dict:
    out = {}
    for label, loaded in (("idle", False), ("load", True)):
        ctx = Load() if loaded else _Nothing()
        with ctx:
            one = fresh(root, f"p-{label}-1", ["--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1"])
            nine = fresh(root, f"p-{label}-9", ["--proxies", NINE, "--tasks", "mislabeled", "--seeds", "1"])
        out[label] = {"one_s": one, "nine_s": nine, "ratio": nine / one}
    return out


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def bench_epoch(cifar: Path, images: int, only: tuple[str, ...] | None = None, model: str = "small_cnn") -> dict:
    """Seconds of one training epoch (the loop's own clock) of `model` on `images` CIFAR-10 images;
    `only` names the variants to time (default: all)."""
    import torch

    from harness.datasets import load_dataset
    from harness.prepared import prepare
    from harness.recipe import Recipe
    from harness.recorders import RecorderRequest
    from harness.runspec import DataSpec, RunSpec
    from harness.training import train_run

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dataset = load_dataset(f"imagefolder:{cifar}", subset=images)
    load_s = time.perf_counter() - t0
    spec_data = DataSpec(dataset=f"imagefolder:{cifar}", subset=images)
    data = prepare(spec_data, dataset, torch.device("cpu"))
    out = {"model": model, "images": images, "load_s": load_s}
    variants = {
        "batch64_rowmajor": (Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=1, augment=False), False),
        "batch64_channels_last": (Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=1, augment=False,
                                         channels_last=True), False),
        "batch128_channels_last": (Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=1, augment=False,
                                          channels_last=True), False),
        "batch128_channels_last_compiled": (Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=1,
                                                   augment=False, channels_last=True), True),
    }
    for name, (recipe, compile_) in variants.items():
        if only is not None and name not in only:
            continue
        spec = RunSpec(spec_data, model, recipe, 0)
        t0 = time.perf_counter()
        run = train_run(spec, data, [RecorderRequest("train_loss")], progress=False, compile=compile_)
        wall = time.perf_counter() - t0
        out[name] = {"loop_s": run.train_seconds, "wall_s": wall, "images_per_s": images / run.train_seconds,
                     "epoch_s_at_50000": run.train_seconds * 50_000 / images}
        print(f"  {name}: {run.train_seconds:.1f} s loop ({images / run.train_seconds:.0f} img/s)", flush=True)
    return out


def bench_memory(root: Path, cifar: Path) -> dict:
    args = ["--dataset", f"imagefolder:{cifar}", "--subset", "50000", "--epochs", "1", "--seeds", "2",
            "--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--workers", "2"]
    proc = harness_run(args, root, "memory")
    peak, t0 = 0, time.perf_counter()
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"memory run failed:\n{err[-2000:]}")
    return {"peak_pss_gib": peak / 2**30, "wall_s": wall}


def tree_pss(pid: int) -> int:
    """Summed PSS in bytes of `pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


FIGURES = ("default", "concurrent", "load", "proxies", "epoch", "memory")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {', '.join(FIGURES)}")
    ap.add_argument("--cifar", type=Path, default=REPO.parent / "shared" / "data" / "cifar10",
                    help="CIFAR-10 as an image folder (epoch, memory)")
    ap.add_argument("--epoch-images", type=int, default=50_000, help="images in the epoch figure")
    ap.add_argument("--epoch-model", default="small_cnn", help="model of the epoch figure (see `harness list`)")
    ap.add_argument("--epoch-variants", help="comma-separated variants of the epoch figure (default: all of "
                    "batch64_rowmajor, batch64_channels_last, batch128_channels_last, batch128_channels_last_compiled)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    wanted = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(FIGURES))
    if unknown:
        ap.error(f"unknown figure(s) {', '.join(unknown)}; valid: {', '.join(FIGURES)}")
    if {"epoch", "memory"} & set(wanted) and not (args.cifar / "train").is_dir():
        ap.error(f"--cifar {args.cifar} is not an image folder with train/: pass the CIFAR-10 folder")
    results: dict = {"state_before": machine_state()}
    print("machine:", json.dumps(results["state_before"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        root = Path(tmp)
        for figure in wanted:
            print(f"{figure} ...", flush=True)
            t0 = time.perf_counter()
            if figure == "epoch":
                only = tuple(v.strip() for v in args.epoch_variants.split(",")) if args.epoch_variants else None
                results[figure] = bench_epoch(args.cifar, args.epoch_images, only, args.epoch_model)
            elif figure == "memory":
                results[figure] = bench_memory(root, args.cifar)
            else:
                results[figure] = globals()[f"bench_{figure}"](root)
            print(f"{figure}: {json.dumps(results[figure])}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    results["state_after"] = machine_state()
    print("machine after:", json.dumps(results["state_after"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
