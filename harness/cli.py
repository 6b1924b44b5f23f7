"""`python -m harness`: run experiments and list what is available.

A thin layer over `harness.api`: argv becomes a dict of the flags actually given, and
`experiment_config` (the same builder `run_experiment` uses) fills the defaults and validates.

Exit codes: 0 success; 1 some run or proxy failed (the rest finished and was written), or a write
after training failed (StorageError; the runs stay in the store); 2 bad input (one `error:` line,
nothing trained or written); 130 interrupted (Ctrl-C; finished runs stay in the store).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from harness.api import DEFAULT_NOISE_RATES, DEFAULTS, experiment_config
from harness.config import ExperimentConfig
from harness.errors import HarnessError, Interrupted, StorageError
from harness.executors import executor_names
from harness.precision import PRECISIONS
from harness.presets import PRESETS

CLI_OUT = Path("results/latest")  # the CLI always writes; the API only when given `out`


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits; memprox promises one `error:` line and exit 2 instead."""

    def error(self, message: str) -> NoReturn:
        raise HarnessError(f"{message}; see `{self.prog} --help`")


class _Once(argparse.Action):
    """Store a flag's value, refusing a second occurrence (argparse would keep the last silently)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        if self.dest in vars(namespace):
            parser.error(f"{option_string} given more than once")
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _add(group: argparse.ArgumentParser, flag: str, help: str, *, dest: str | None = None,
         flag_value: Any = None, shown_default: Any = None, **kwargs: Any) -> None:
    """A flag whose default lives in `run_experiment`'s signature (`shown_default` only words it
    for --help); absent flags stay out of the namespace, so the builder can tell
    `--duplicate-pairs 0` from no flag at all. `flag_value`: a switch that stores this value."""
    dest = dest or flag.lstrip("-").replace("-", "_")
    if flag_value is None and kwargs.get("action") != "append":
        shown = shown_default if shown_default is not None else DEFAULTS.get(dest)
        if shown is None:
            shown = "the preset's" if dest in _FROM_PRESET else "none"
        help += f" (default: {','.join(map(str, shown)) if isinstance(shown, tuple) else shown})"
    if flag_value is not None:
        kwargs.update(nargs=0, const=flag_value)
    kwargs.setdefault("action", _Once)
    group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=help, **kwargs)


_FROM_PRESET = {"model", "epochs", "batch_size", "lr", "augment", "subset", "precision"}


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: `--seed 5` would silently mean `--seeds 5`, i.e. five seeds
    p = _Parser(prog="python -m harness", description="memprox: benchmark memorization proxies", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the shared runs, score proxies, write a leaderboard", allow_abbrev=False)
    _add(r, "--proxies", "'all' or a comma-separated list; PROXY(k=v,...) selects a variant, so "
         "'curvature(n=2),curvature(n=10)' compares two side by side (see `list`)")
    _add(r, "--tasks", "comma-separated tasks (see `list`)")
    _add(r, "--dataset", "digits (bundled), cifar10, cifar100, mnist, fashion-mnist, imagefolder:PATH or "
         "npz:PATH (see `list`)")
    _add(r, "--data-root", "folder holding torchvision datasets")
    _add(r, "--download", "let torchvision download the dataset into --data-root", flag_value=True)
    _add(r, "--subset", "keep the first N training samples in canonical order", type=int)
    _add(r, "--preset", f"recipe and model: {', '.join(PRESETS)} (see `list`)")
    _add(r, "--model", "model name (see `list`)")
    _add(r, "--epochs", "training epochs", type=int)
    _add(r, "--batch-size", "batch size", type=int)
    _add(r, "--lr", "learning rate", type=float)
    _add(r, "--augment", "random crop + flip", choices=["on", "off"])
    _add(r, "--seeds", "number of seeds (3 -> 0,1,2) or an explicit list (0,5)")
    _add(r, "--noise-rates", "symmetric label-noise rates, each in (0, 1)",
         shown_default=DEFAULT_NOISE_RATES)
    _add(r, "--duplicate-pairs", "duplicated pairs, >= 1", type=int, shown_default="0.5%% of N")
    _add(r, "--noisy-labels", "FILE.npy or FILE.npz[:KEY] of real noisy labels (replaces --noise-rates)")
    _add(r, "--proxy-arg", "proxy parameter, repeatable (e.g. in_confidence.variant=max)", dest="proxy_args",
         action="append", metavar="PROXY.PARAM=VALUE")
    _add(r, "--task-arg", "task parameter, repeatable (e.g. memorization.k=64)", dest="task_args",
         action="append", metavar="TASK.PARAM=VALUE")
    _add(r, "--reference", "memorization reference: stability, fz:PATH or cscore:PATH (memorization, theory and "
         "privacy tasks)", shown_default="stability")
    _add(r, "--device", "auto (CUDA when present), cpu, cuda, cuda:N")
    # paths stay str here: Path("") would be the current folder; the API refuses an empty path
    _add(r, "--out", "output directory (see --overwrite)", shown_default=CLI_OUT)
    _add(r, "--store", "run store", shown_default="$MEMPROX_CACHE/store or ~/.cache/memprox/store")
    _add(r, "--checkpoint-every", "seconds between in-run checkpoints (resume after interruption)", type=float)
    _add(r, "--threads", "torch threads of each run, 1 to 1024; more pays only for a large model alone on an idle "
         "machine (see 'Threads and workers' in the README)", type=int)
    _add(r, "--no-progress", "hide progress bars", dest="progress", flag_value=False)
    _add(r, "--executor", "where runs train: local (a pool of worker processes), ray (a local Ray or a cluster), "
         "inprocess (this process, for debugging)", choices=executor_names())
    _add(r, "--workers", "local, ray: runs training at once (worker processes, or jobs on a local Ray)", type=int,
         shown_default="usable CPUs // --threads")
    _add(r, "--ray-address", "ray: join this cluster (HOST:PORT or auto) instead of starting one")
    _add(r, "--gpus-per-run", "ray on GPUs: fraction of a GPU per run, in [0.01, 1] (0.25 packs four)", type=float)
    _add(r, "--bootstrap", "bootstrap resamples for confidence intervals and paired tests (0: none)", type=int)
    _add(r, "--overwrite", "let --out replace a folder another experiment wrote", flag_value=True)
    _add(r, "--precision", "training precision: fp32 or bf16 (autocast)", choices=PRECISIONS)
    _add(r, "--compile", "torch.compile the model", flag_value=True)
    sub.add_parser("list", help="list proxies, datasets, models, tasks and presets")
    return p


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as `run_experiment` keywords (`--out` defaults to results/latest)."""
    options = {k: v for k, v in vars(args).items() if k != "command"}
    options.setdefault("out", CLI_OUT)
    return options


def preset_note(cfg: ExperimentConfig) -> str:
    r = cfg.recipe
    return (f"preset {cfg.preset}: {cfg.model}, {r.epochs} epochs {r.optimizer} lr {r.lr:g} {r.schedule}, "
            f"batch {r.batch_size}, augmentation {'on' if r.augment else 'off'}")


def cmd_list() -> None:
    from tabulate import tabulate

    from harness.datasets import dataset_names
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
    print("\nPresets:")
    print(tabulate([(n, p.description) for n, p in PRESETS.items()], headers=["name", "description"]))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = experiment_config(**run_options(args))  # bad options fail here, before the heavy imports
    from harness.experiment import Experiment, format_phases
    from harness.leaderboard import markdown

    exp = Experiment(cfg)
    print(f"memprox: {cfg.dataset} (N={exp.dataset.n_train}) · {cfg.model} · {cfg.recipe.epochs} epochs · "
          f"{len(exp.proxies)} proxies · {len(exp.plan.settings)} settings · {len(exp.plan.runs)} distinct runs · "
          f"device {exp.device} · preset {cfg.preset}", file=sys.stderr)
    result = exp.run()
    print(f"runs: {len(result.trained)} trained, {len(result.reused)} reused from the store", file=sys.stderr)
    if result.base_train_acc:
        accs = result.base_train_acc
        print(f"final training accuracy of the base runs on the labels they trained on: "
              f"mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f} ({preset_note(cfg)})", file=sys.stderr)
    print(markdown(result.leaderboard))
    if cfg.out is not None:
        print(f"leaderboard: {cfg.out / 'leaderboard.csv'}  (per-seed rows: raw.csv, per-sample scores: scores/)")
    print(format_phases(result.phase_seconds), file=sys.stderr)
    if result.failures:
        print(f"{len(result.failures)} failure(s):", file=sys.stderr)
        for f in result.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    return 0


def _take_back_ctrl_c() -> None:
    """A shell starts a script's background job (`memprox run ... &`) with SIGINT ignored, and
    Python then never raises KeyboardInterrupt: `kill -INT` and Ctrl-C were ignored and the run went
    on to exit 0. memprox promises that Ctrl-C always stops a run (exit 130, stored runs kept), so
    it restores Python's handler."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread: the embedding program owns signals
            pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring) instead of raising."""
    _take_back_ctrl_c()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            cmd_list()
            return 0
        return cmd_run(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; runs that finished are kept in the store, rerun to resume", file=sys.stderr)
        return 130
