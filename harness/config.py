"""An experiment's configuration, after the CLI or `harness.api` has turned options into it.

`validate()` is the one place where config-level input is checked, so the CLI, the Python API and a
hand-built config all refuse the same mistakes before anything is trained or written (each message
names the problem and the fix; the CLI exits 2). Counts are bounded (`MAX_*` below, each far above
any real experiment) so that a mistyped number (2**40 epochs) is refused instead of becoming an
allocation or a loop that never ends. `validate_for_data()` adds the checks that need the loaded
dataset (the memory --epochs and --bootstrap imply at its N, whether the models take its inputs);
the experiment calls it while planning, before the first run trains. Checks that need a registry
(task and proxy names, their parameters) live with the tasks and the proxies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.precision import PRECISIONS
from harness.recipe import Recipe

if TYPE_CHECKING:
    from harness.datasets import Dataset

MAX_EPOCHS = 100_000
MAX_SEEDS = 1_000  # seeds of one experiment; each trains runs of its own
MAX_SEED = 2**64 - 1  # torch seeds are 64-bit
MAX_THREADS = 1_024  # torch threads of a run, and --workers
MAX_BATCH_SIZE = 2**24
MAX_LR = 1e6  # far above any working rate; past 3.4e38 torch cannot even hold it in float32
MAX_NOISE_RATES = 1_000
MAX_BOOTSTRAP = 100_000  # far past the point where percentile intervals stop changing
MIN_GPUS_PER_RUN = 0.01  # Ray rounds smaller fractions away
#: What --epochs and --bootstrap may imply in memory once N is known (see `validate_for_data`).
MAX_IMPLIED_BYTES = 4 * 2**30


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
    threads: int = 1  # torch threads of each job, under every executor (the bits depend on it); None means 1
    checkpoint_every_s: float = 120.0
    # execution (issues 8, 17): where the runs train; each executor checks its own options
    executor: str = "local"  # a name in harness.executors: local (worker processes), ray, inprocess
    workers: int | None = None  # local, ray: concurrent jobs (default: usable CPUs // threads)
    ray_address: str | None = None  # ray: join an existing cluster instead of starting one
    # ray on GPUs: fraction of one GPU each job reserves, in [0.01, 1] (0.25 packs four); a run
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

    def validate_for_data(self, dataset: Dataset, models: Iterable[str], n_proxies: int) -> None:
        """The checks that need the loaded dataset, run while planning (before the first run
        trains): the memory --epochs and --bootstrap imply at its N, and whether each model the
        plan trains (`models`: the proxies' and the reference's) takes its input shape."""
        n = dataset.n_train
        self._check_epochs_memory(n)
        self._check_bootstrap_memory(n, n_proxies)
        for model in sorted(set(models)):
            check_model_input(model, tuple(dataset.x_train.shape[1:]), dataset.num_classes, self.dataset,
                              tokens=dataset.is_tokens)

    def _check_epochs_memory(self, n: int) -> None:
        """Recorders keep one float32 per sample and epoch ((epochs, N) buffers, several per run)."""
        epochs = self.recipe.epochs
        need = 4 * epochs * n
        if need > MAX_IMPLIED_BYTES:
            fit = MAX_IMPLIED_BYTES // (4 * n)
            raise HarnessError(f"--epochs {epochs} at N={n} samples needs {_gib(need)} for each per-epoch record "
                               f"(epochs x N float32); at most {fit} epochs fit in {_gib(MAX_IMPLIED_BYTES)}: lower "
                               "--epochs or use a --subset")

    def _check_bootstrap_memory(self, n: int, n_proxies: int) -> None:
        """B resamples are held as a (B, N) uint16 count matrix, weighed in float64 chunks, and
        combined over seeds as (B, seeds) draws with every proxy's (B, seeds) replicates."""
        from harness.bootstrap import CHUNK_ELEMENTS

        b = self.bootstrap
        need = 2 * b * n + 8 * min(b * n, CHUNK_ELEMENTS) + 8 * b * len(self.seeds) * (n_proxies + 1)
        if b and need > MAX_IMPLIED_BYTES:
            per_resample = 2 * n + 8 * len(self.seeds) * (n_proxies + 1)
            fit = (MAX_IMPLIED_BYTES - 8 * CHUNK_ELEMENTS) // per_resample
            raise HarnessError(f"--bootstrap {b} at N={n} samples needs {_gib(need)} (B x N uint16 resample counts, "
                               f"float64 weights, seed replicates of {n_proxies} proxies); at most {fit} resamples fit "
                               f"in {_gib(MAX_IMPLIED_BYTES)}: lower --bootstrap (1000 is typical, 0 disables the "
                               "intervals)")

    def _validate_recipe(self) -> None:
        r = self.recipe
        _integer(r.epochs, "epochs", "--epochs", minimum=1, maximum=MAX_EPOCHS)
        _integer(r.batch_size, "batch size", "--batch-size", minimum=1, maximum=MAX_BATCH_SIZE)
        _number(r.lr, "learning rate", "--lr", maximum=MAX_LR)
        r.validate()
        if not isinstance(self.model, str) or not self.model.strip():
            raise HarnessError(f"model must be a model name (got {self.model!r}); see `python -m harness list`")

    def _validate_selection(self) -> None:
        if not isinstance(self.proxies, str) or not self.proxies.strip():
            raise HarnessError("no proxies selected; pass --proxies all or a comma-separated list")
        if not self.tasks:
            raise HarnessError("no tasks selected; pass e.g. --tasks mislabeled,duplicates")
        _unique(self.tasks, "task", "--tasks")
        if not self.seeds:
            raise HarnessError("no seeds given; pass a count (--seeds 3) or a list (--seeds 0,5)")
        _at_most(len(self.seeds), MAX_SEEDS, "seeds", "--seeds", "each seed trains runs of its own")
        for seed in self.seeds:
            _integer(seed, "seed", "--seeds", minimum=0, maximum=MAX_SEED)
        _unique(self.seeds, "seed", "--seeds")
        for flag, args in (("--proxy-arg", self.proxy_args), ("--task-arg", self.task_args)):
            if not isinstance(args, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and all(isinstance(p, str) for p in v)
                for k, v in args.items()
            ):
                raise HarnessError(f"{flag} must map NAME -> {{PARAM: VALUE}} (got {args!r})")
        _integer(self.bootstrap, "bootstrap resamples", "--bootstrap", minimum=0, maximum=MAX_BOOTSTRAP,
                 fix="0 disables the intervals")

    def _validate_data(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise HarnessError(f"dataset must be a name (got {self.dataset!r}); see `python -m harness list`")
        if self.subset is not None:
            _integer(self.subset, "subset size", "--subset", minimum=1)
        if self.duplicate_pairs is not None:
            _integer(self.duplicate_pairs, "duplicate pairs", "--duplicate-pairs", minimum=1,
                     fix="omit it for the default of 0.5% of N, or drop the duplicates task")
        _at_most(len(self.noise_rates), MAX_NOISE_RATES, "noise rates", "--noise-rates",
                 "each rate trains runs of its own")
        for rate in self.noise_rates:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
                raise HarnessError(f"noise rate {rate!r} is outside (0, 1); pass rates like --noise-rates 0.01,0.1 "
                                   "(a clean run needs no noise rate)")
        _unique(self.noise_rates, "noise rate", "--noise-rates")
        if self.noisy_labels is not None and (not isinstance(self.noisy_labels, str) or not self.noisy_labels.strip()):
            raise HarnessError(f"--noisy-labels must name a file (got {self.noisy_labels!r}); pass FILE.npy or "
                               "FILE.npz[:KEY]")
        if "mislabeled" in self.tasks and not self.noisy_labels and not self.noise_rates:
            raise HarnessError("the mislabeled task needs noise rates; pass --noise-rates 0.1 (or --noisy-labels "
                               "FILE, or drop the task)")
        for name in ("download", "progress", "overwrite", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise HarnessError(f"{name} must be True or False (got {getattr(self, name)!r})")
        for name in ("out", "store", "data_root"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                raise HarnessError(f"{name} must be a pathlib.Path or None (got {type(value).__name__} {value!r})")
        if not isinstance(self.device, str) or not self.device.strip():
            raise HarnessError(f"device must be a name such as auto, cpu or cuda (got {self.device!r}); fix --device")
        if not isinstance(self.reference, str):
            raise HarnessError(f"reference must be stability, fz:PATH or cscore:PATH (got {self.reference!r}); "
                               "fix --reference")

    def _validate_execution(self) -> None:
        from harness.executors import validate_executor  # light: no torch, no Ray unless --executor ray

        if self.threads is not None:
            _integer(self.threads, "thread count", "--threads", minimum=1, maximum=MAX_THREADS,
                     fix="1 (the default) suits most runs; see 'Threads and workers' in the README")
        _number(self.checkpoint_every_s, "checkpoint interval", "--checkpoint-every")
        if not isinstance(self.executor, str) or not self.executor:
            raise HarnessError(f"executor must be a name such as local or ray (got {short_repr(self.executor)})")
        validate_executor(self)  # the name, other executors' options, and its own options
        gpus = self.gpus_per_run
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not MIN_GPUS_PER_RUN <= gpus <= 1.0:
            raise HarnessError(f"GPUs per run must be in [{MIN_GPUS_PER_RUN:g}, 1] (got {gpus!r}): a run trains on one "
                               "device; pass e.g. --gpus-per-run 0.25 to pack four runs on a GPU")
        if self.precision not in PRECISIONS:
            raise HarnessError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.precision != self.recipe.precision:  # training reads the recipe's: never ignore one silently
            raise HarnessError(f"precision {self.precision!r} disagrees with recipe.precision "
                               f"{self.recipe.precision!r}; set both (harness.api.experiment_config does)")


def check_model_input(model: str, input_shape: tuple[int, ...], num_classes: int, dataset: str,
                      tokens: bool = False) -> None:
    """Refuse a model that cannot take the dataset's samples (e.g. small_cnn on (N, D) features,
    which pooling shrinks below 1x1, or an image model on token ids) before anything trains: a
    forward pass of two samples on the meta device costs no memory and no time. A model the meta
    device cannot run is tried on the CPU before it is refused, so only a real mismatch stops the
    experiment. `tokens`: the samples are int64 token ids (text), and the test input is too."""
    import torch

    from harness.models import build_model

    def forward(device: str) -> None:
        with torch.device(device), torch.no_grad():
            x = torch.zeros(2, *input_shape, dtype=torch.int64 if tokens else torch.float32)
            build_model(model, input_shape, num_classes).eval()(x)

    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        try:
            if not tokens:  # the meta device does not check dtypes: token ids go straight to the CPU
                forward("meta")
                return
        except HarnessError:
            raise
        except Exception:  # confirmed on the CPU below
            pass
        try:
            forward("cpu")
        except HarnessError:
            raise
        except Exception as e:  # any failure of a forward pass means the model cannot train here
            shape = "x".join(map(str, input_shape))
            kind = (" (token ids of text: pick a text model such as text_bow or text_cnn)" if tokens else
                    " ((N, D) features are stored as D x 1 x 1)" if input_shape[1:] == (1, 1) else "")
            raise HarnessError(f"model {model} cannot take the {shape} samples of dataset {dataset}{kind}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; pick a model that takes "
                               "this input (e.g. mlp)") from e


def _integer(value: Any, what: str, flag: str, *, minimum: int, maximum: int | None = None, fix: str = "") -> None:
    """Integers only (a bool is not a count), at least `minimum` and at most `maximum`."""
    hint = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HarnessError(f"{what} must be an integer >= {minimum} (got {short_repr(value)}); fix {flag}{hint}")
    if maximum is not None and value > maximum:
        raise HarnessError(f"{what} must be at most {maximum} (got {value}); fix {flag}{hint}")


def _number(value: Any, what: str, flag: str, maximum: float = math.inf) -> None:
    """A finite number > 0 (and at most `maximum`)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (isinstance(value, int) or math.isfinite(value))  # math.isfinite overflows on huge ints
    if not ok or value <= 0:
        raise HarnessError(f"{what} must be a finite number > 0 (got {short_repr(value)}); fix {flag}")
    if value > maximum:
        raise HarnessError(f"{what} must be at most {maximum:g} (got {short_repr(value)}); fix {flag}")


def _at_most(count: int, maximum: int, what: str, flag: str, why: str) -> None:
    if count > maximum:
        raise HarnessError(f"{flag} gives {count} {what}; at most {maximum} are allowed ({why})")


def _unique(values: Iterable[Any], what: str, flag: str) -> None:
    """A repeated seed, rate or task would be counted twice (n_seeds 2, std 0) instead of once."""
    repeated = sorted((v for v, k in Counter(values).items() if k > 1), key=str)
    if repeated:
        raise HarnessError(f"{flag} repeats {what}(s) {', '.join(map(str, repeated))}; list each once")


def short_repr(value: Any, limit: int = 80) -> str:
    """repr(value), shortened: a message is one line even for a huge list."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"
