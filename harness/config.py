"""An experiment's configuration, after the CLI or `harness.api` has turned options into it.

`validate()` is the one place where config-level input is checked, so the CLI, the Python API and a
hand-built config all refuse the same mistakes before anything is trained or written (each message
names the problem and the fix; the CLI exits 2). Checks that need a loaded dataset (labels, class
sizes) or a registry (task and proxy names, their parameters) live with the dataset, the tasks and
the proxies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.precision import PRECISIONS
from harness.recipe import Recipe

EXECUTORS = ("local", "ray")


@dataclass
class ExperimentConfig:
    dataset: str = "digits"
    model: str = "mlp"
    recipe: Recipe = field(default_factory=Recipe)
    preset: str = "quick"
    subset: int | None = None
    data_root: Path | None = None
    download: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = ("mislabeled", "duplicates", "cost", "memorization", "theory", "privacy")
    proxies: str = "all"
    proxy_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    noise_rates: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)
    duplicate_pairs: int | None = None  # None: 0.5% of N
    noisy_labels: str | None = None  # "file.npy" or "file.npz:key"
    reference: str = "stability"
    task_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    out: Path | None = Path("results/latest")  # None: the experiment writes no files
    store: Path | None = None  # default: $MEMPROX_CACHE/store or ~/.cache/memprox/store
    progress: bool = True
    threads: int | None = None  # CPU threads for torch; None keeps torch's default
    checkpoint_every_s: float = 120.0
    # execution (issue 8): where the runs train
    executor: str = "local"  # "local" | "ray"
    workers: int | None = None  # ray: concurrent jobs on a local Ray (default: CPU cores)
    ray_address: str | None = None  # ray: join an existing cluster instead of starting one
    # ray on GPUs: fraction of one GPU each job reserves, in (0, 1] (0.25 packs four); a run
    # trains on one device, so more than one GPU per run would only leave GPUs idle
    gpus_per_run: float = 1.0
    # statistics (issue 9)
    bootstrap: int = 1000  # resamples for confidence intervals and paired tests; 0 disables them
    overwrite: bool = False  # let --out replace a folder another experiment wrote
    # GPU path (issue 10)
    precision: str = "fp32"  # "fp32" | "bf16"; equals recipe.precision, which training reads
    compile: bool = False  # torch.compile the model

    def validate(self) -> None:
        """Raise HarnessError for the first config-level mistake; called before anything runs."""
        self._validate_recipe()
        self._validate_selection()
        self._validate_data()
        self._validate_execution()

    def _validate_recipe(self) -> None:
        r = self.recipe
        _integer(r.epochs, "epochs", "--epochs", minimum=1)
        _integer(r.batch_size, "batch size", "--batch-size", minimum=1)
        _number(r.lr, "learning rate", "--lr")
        r.validate()
        if not isinstance(self.model, str) or not self.model:
            raise HarnessError(f"model must be a model name (got {self.model!r}); see `python -m harness list`")

    def _validate_selection(self) -> None:
        if not isinstance(self.proxies, str) or not self.proxies.strip():
            raise HarnessError("no proxies selected; pass --proxies all or a comma-separated list")
        if not self.tasks:
            raise HarnessError("no tasks selected; pass e.g. --tasks mislabeled,duplicates")
        _unique(self.tasks, "task", "--tasks")
        if not self.seeds:
            raise HarnessError("no seeds given; pass a count (--seeds 3) or a list (--seeds 0,5)")
        for seed in self.seeds:
            _integer(seed, "seed", "--seeds", minimum=0)
        _unique(self.seeds, "seed", "--seeds")
        for flag, args in (("--proxy-arg", self.proxy_args), ("--task-arg", self.task_args)):
            if not isinstance(args, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and all(isinstance(p, str) for p in v)
                for k, v in args.items()
            ):
                raise HarnessError(f"{flag} must map NAME -> {{PARAM: VALUE}} (got {args!r})")
        _integer(self.bootstrap, "bootstrap resamples", "--bootstrap", minimum=0, fix="0 disables the intervals")

    def _validate_data(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise HarnessError(f"dataset must be a name (got {self.dataset!r}); see `python -m harness list`")
        if self.subset is not None:
            _integer(self.subset, "subset size", "--subset", minimum=1)
        if self.duplicate_pairs is not None:
            _integer(self.duplicate_pairs, "duplicate pairs", "--duplicate-pairs", minimum=1,
                     fix="omit it for the default of 0.5% of N, or drop the duplicates task")
        for rate in self.noise_rates:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
                raise HarnessError(f"noise rate {rate!r} is outside (0, 1); pass rates like --noise-rates 0.01,0.1 "
                                   "(a clean run needs no noise rate)")
        _unique(self.noise_rates, "noise rate", "--noise-rates")
        if "mislabeled" in self.tasks and not self.noisy_labels and not self.noise_rates:
            raise HarnessError("the mislabeled task needs noise rates; pass --noise-rates 0.1 (or --noisy-labels "
                               "FILE, or drop the task)")
        for name in ("download", "progress", "overwrite", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise HarnessError(f"{name} must be True or False (got {getattr(self, name)!r})")
        for name in ("out", "store", "data_root"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Path):
                raise HarnessError(f"{name} must be a pathlib.Path or None (got {getattr(self, name)!r})")

    def _validate_execution(self) -> None:
        if self.threads is not None:
            _integer(self.threads, "thread count", "--threads", minimum=1, fix="omit it for torch's default")
        _number(self.checkpoint_every_s, "checkpoint interval", "--checkpoint-every")
        if self.executor not in EXECUTORS:
            raise HarnessError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        if self.workers is not None:
            _integer(self.workers, "worker count", "--workers", minimum=1)
            if self.executor != "ray":
                raise HarnessError("--workers needs --executor ray (the local executor runs one job at a time)")
            if self.ray_address is not None:
                raise HarnessError("--workers sizes a local Ray; a cluster joined with --ray-address has its own "
                                   "workers: pass one of them")
        if self.ray_address is not None:
            if not isinstance(self.ray_address, str) or not self.ray_address:
                raise HarnessError(f"ray address must be HOST:PORT or 'auto' (got {self.ray_address!r})")
            if self.executor != "ray":
                raise HarnessError("--ray-address needs --executor ray")
        gpus = self.gpus_per_run
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not 0.0 < gpus <= 1.0:
            raise HarnessError(f"GPUs per run must be in (0, 1] (got {gpus!r}): a run trains on one device; "
                               "pass e.g. --gpus-per-run 0.25 to pack four runs on a GPU")
        if self.precision not in PRECISIONS:
            raise HarnessError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.precision != self.recipe.precision:  # training reads the recipe's: never ignore one silently
            raise HarnessError(f"precision {self.precision!r} disagrees with recipe.precision "
                               f"{self.recipe.precision!r}; set both (harness.api.experiment_config does)")


def _integer(value: Any, what: str, flag: str, *, minimum: int, fix: str = "") -> None:
    """Integers only (a bool is not a count), at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        hint = f"; {fix}" if fix else ""
        raise HarnessError(f"{what} must be an integer >= {minimum} (got {value!r}); fix {flag}{hint}")


def _number(value: Any, what: str, flag: str) -> None:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise HarnessError(f"{what} must be a finite number > 0 (got {value!r}); fix {flag}")


def _unique(values: tuple[Any, ...], what: str, flag: str) -> None:
    """A repeated seed, rate or task would be counted twice (n_seeds 2, std 0) instead of once."""
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if repeated:
        raise HarnessError(f"{flag} repeats {what}(s) {', '.join(map(str, repeated))}; list each once")
