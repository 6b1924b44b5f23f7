"""`python -m harness`: run experiments and list what is available.

Exit codes: 0 success; 1 some run or proxy failed (the rest finished and was written);
2 bad input (nothing was trained or written).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.presets import PRESETS, preset_for


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise HarnessError(f"expected comma-separated numbers, got {text!r}") from e


def _seeds(text: str) -> tuple[int, ...]:
    """'3' means seeds 0,1,2; '0,5' means exactly those seeds."""
    try:
        if "," in text:
            return tuple(int(t) for t in text.split(",") if t.strip())
        return tuple(range(int(text)))
    except ValueError as e:
        raise HarnessError(f"--seeds takes a count (3) or a list (0,5), got {text!r}") from e


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _key_values(items: list[str], flag: str) -> dict[str, dict[str, Any]]:
    """['curvature.n=2', ...] -> {'curvature': {'n': 2}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        owner, dot, key = name.partition(".")
        if not sep or not dot or not owner or not key:
            raise HarnessError(f"{flag} takes NAME.PARAM=VALUE (e.g. curvature.n=2), got {item!r}")
        out.setdefault(owner, {})[key] = _value(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="memprox: benchmark memorization proxies")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the shared runs, score proxies, write a leaderboard",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--proxies", default="all",
                   help="'all' or a comma-separated list; PROXY(k=v,...) selects a variant, so "
                   "'curvature(n=2),curvature(n=10)' compares two side by side (see `list`)")
    r.add_argument("--tasks", default="mislabeled,duplicates,cost,memorization,theory",
                   help="comma-separated tasks (see `list`)")
    r.add_argument("--dataset", default="digits",
                   help="digits (bundled), cifar10, cifar100, mnist, fashion-mnist, or imagefolder:PATH")
    r.add_argument("--data-root", type=Path, default=None, help="folder holding torchvision datasets")
    r.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data-root")
    r.add_argument("--subset", type=int, default=None,
                   help="keep the first N training samples in canonical order (default: the preset's)")
    r.add_argument("--preset", default="quick", choices=PRESETS,
                   help="quick: CPU-sized model/recipe that still fits the noisy labels; paper: App. B.1")
    r.add_argument("--model", default=None, help="model name (default: the preset's; see `list`)")
    r.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    r.add_argument("--batch-size", type=int, default=None, help="batch size (default: the preset's)")
    r.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    r.add_argument("--augment", choices=["on", "off"], default=None,
                   help="random crop + flip (default: the preset's)")
    r.add_argument("--seeds", default="3", help="number of seeds (3 -> 0,1,2) or an explicit list (0,5)")
    r.add_argument("--noise-rates", default="0.01,0.02,0.05,0.1", help="symmetric label-noise rates, each in [0,1)")
    r.add_argument("--duplicate-pairs", type=int, default=None, help="duplicated pairs (default 0.5%% of N)")
    r.add_argument("--noisy-labels", default=None,
                   help="FILE.npy or FILE.npz[:KEY] of real noisy labels (replaces --noise-rates)")
    r.add_argument("--proxy-arg", action="append", default=[], metavar="PROXY.PARAM=VALUE",
                   help="proxy parameter, repeatable (e.g. in_confidence.variant=max)")
    r.add_argument("--task-arg", action="append", default=[], metavar="TASK.PARAM=VALUE",
                   help="task parameter, repeatable")
    r.add_argument("--reference", default="stability",
                   help="memorization reference: stability, fz:PATH or cscore:PATH")
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    r.add_argument("--out", type=Path, default=Path("results/latest"), help="output directory")
    r.add_argument("--store", type=Path, default=None,
                   help="run store (default $MEMPROX_CACHE/store or ~/.cache/memprox/store)")
    r.add_argument("--checkpoint-every", type=float, default=120.0,
                   help="seconds between in-run checkpoints (resume after interruption)")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's; 1 is fastest for tiny models on a busy machine)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub.add_parser("list", help="list proxies, datasets, models, tasks and presets")
    return p


def config_from_args(a: argparse.Namespace) -> ExperimentConfig:
    preset = preset_for(a.preset, a.dataset)
    recipe = preset.recipe
    if a.epochs is not None:
        recipe = replace(recipe, epochs=a.epochs, milestones=tuple(m for m in recipe.milestones if m < a.epochs))
    if a.batch_size is not None:
        recipe = replace(recipe, batch_size=a.batch_size)
    if a.lr is not None:
        recipe = replace(recipe, lr=a.lr)
    if a.augment is not None:
        recipe = replace(recipe, augment=a.augment == "on")
    subset = a.subset if a.subset is not None else preset.subset
    return ExperimentConfig(
        dataset=a.dataset, model=a.model or preset.model, recipe=recipe, preset=preset.name, subset=subset,
        data_root=a.data_root, download=a.download, seeds=_seeds(a.seeds),
        tasks=tuple(t.strip() for t in a.tasks.split(",") if t.strip()), proxies=a.proxies,
        proxy_args=_key_values(a.proxy_arg, "--proxy-arg"), task_args=_key_values(a.task_arg, "--task-arg"),
        noise_rates=_floats(a.noise_rates), duplicate_pairs=a.duplicate_pairs, noisy_labels=a.noisy_labels,
        reference=a.reference, device=a.device, out=a.out, store=a.store, progress=not a.no_progress,
        checkpoint_every_s=a.checkpoint_every, threads=a.threads,
    )


def preset_note(cfg: ExperimentConfig) -> str:
    r = cfg.recipe
    return (f"preset {cfg.preset}: {cfg.model}, {r.epochs} epochs {r.optimizer} lr {r.lr:g} {r.schedule}, "
            f"batch {r.batch_size}, augmentation {'on' if r.augment else 'off'}")


def cmd_list() -> None:
    from tabulate import tabulate

    from harness.data import dataset_names
    from harness.models import MODELS
    from harness.tasks import TASKS
    from proxies import available_proxies

    print("Proxies:")
    print(tabulate([(n, c.description, c.citation) for n, c in available_proxies().items()],
                   headers=["name", "description", "citation"]))
    print("\nDatasets:", ", ".join(dataset_names()))
    print("\nModels:")
    print(tabulate([(m.name, m.description) for m in MODELS.values()], headers=["name", "description"]))
    print("\nTasks:")
    print(tabulate([(n, t.description) for n, t in TASKS.items()], headers=["name", "description"]))
    print("\nPresets:", ", ".join(PRESETS))


def cmd_run(a: argparse.Namespace) -> int:
    from harness.experiment import Experiment

    cfg = config_from_args(a)
    exp = Experiment(cfg)
    n_runs = len(exp.plan.runs)
    print(f"memprox: {cfg.dataset} (N={exp.dataset.n_train}) · {cfg.model} · {cfg.recipe.epochs} epochs · "
          f"{len(exp.proxies)} proxies · {len(exp.plan.settings)} settings · {n_runs} distinct runs · "
          f"device {exp.device} · preset {cfg.preset}", file=sys.stderr)
    result = exp.run()
    print(f"runs: {len(result.trained)} trained, {len(result.reused)} reused from the store", file=sys.stderr)
    if result.base_train_acc:
        accs = result.base_train_acc
        print(f"final training accuracy of the base runs on the labels they trained on: "
              f"mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f} ({preset_note(cfg)})", file=sys.stderr)
    from harness.leaderboard import markdown

    print(markdown(result.leaderboard))
    print(f"leaderboard: {cfg.out / 'leaderboard.csv'}  (per-seed rows: raw.csv, per-sample scores: scores/)")
    if result.failures:
        print(f"{len(result.failures)} failure(s):", file=sys.stderr)
        for f in result.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            cmd_list()
            return 0
        return cmd_run(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
