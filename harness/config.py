"""An experiment's configuration, after the CLI (or a preset) has been parsed and validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.recipe import Recipe


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
    tasks: tuple[str, ...] = ("mislabeled", "duplicates", "cost", "memorization", "theory")
    proxies: str = "all"
    proxy_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    noise_rates: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)
    duplicate_pairs: int | None = None  # None: 0.5% of N
    noisy_labels: str | None = None  # "file.npy" or "file.npz:key"
    reference: str = "stability"
    task_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    out: Path = Path("results/latest")
    store: Path | None = None  # default: <out>/../store shared across outputs
    progress: bool = True
    threads: int | None = None  # CPU threads for torch; None keeps torch's default
    checkpoint_every_s: float = 120.0
    # execution (issue 8): where the runs train
    executor: str = "local"  # "local" | "ray"
    workers: int | None = None  # ray: concurrent jobs on a local Ray (default: CPU cores)
    ray_address: str | None = None  # ray: join an existing cluster instead of starting one
    gpus_per_run: float = 1.0  # ray on GPUs: fraction of a GPU each job reserves (0.25 packs four)
    # statistics (issue 9)
    bootstrap: int = 1000  # resamples for confidence intervals and paired tests; 0 disables them
    overwrite: bool = False  # let --out replace a folder another experiment wrote
    # GPU path (issue 10)
    precision: str = "fp32"  # "fp32" | "bf16" (autocast; recorded signals stay float32)
    compile: bool = False  # torch.compile the model
