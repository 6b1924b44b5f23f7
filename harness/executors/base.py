"""What every executor is: the one seam between the experiment and where its jobs run.

An executor takes self-contained jobs (`harness.jobs.Job`), runs them somewhere, and yields each
job's outcome as it finishes, in any order; the driver stores the results. What differs between
executors, and so is theirs to say rather than the experiment's to guess from their type: which
config options they read and how those are checked, how a job sees the device and the store
(`placement`, `shares_store`), and how long their workers live (`close`).

This module stays light (no torch, no Ray): config validation imports executors before any heavy
import, so bad options fail in milliseconds.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tqdm.auto import tqdm

from harness.errors import RunFailed, StorageError
from harness.values import MAX_THREADS, check_integer

if TYPE_CHECKING:
    import torch

    from harness.config import ExperimentConfig
    from harness.jobs import Job, JobResult

JobFn = Callable[["Job"], "JobResult"]
#: A finished job: its result, or the exception that ended it (a worker that died twice, ...).
Outcome = tuple["Job", "JobResult | BaseException"]
#: Retries of a job whose worker process (or node) died; an exception inside a job is not retried.
MAX_RETRIES = 1


@dataclass(frozen=True)
class JobPlacement:
    """The fields of a Job that depend on where it runs."""

    device: str  # the device name as the worker sees it
    threads: int  # torch intra-op threads of the job
    progress: bool  # per-epoch progress bars (only where the terminal is the job's own)
    num_cpus: float  # resources a scheduler reserves for the job
    num_gpus: float


class WorkersLost(StorageError):
    """The executor cannot run jobs at all any more (workers that cannot start, a cluster gone).
    Like a failed store write: one line, exit 1, every run already stored is kept."""


class Executor(ABC):
    """One way of running jobs; a subclass registers itself with `harness.executors.register_executor`."""

    #: The --executor name, and one line for `--help` and the README.
    name: ClassVar[str]
    description: ClassVar[str]
    #: Executor-specific config fields this executor reads (of `harness.executors.EXECUTOR_OPTIONS`):
    #: one of those set for an executor that does not read it is refused, not ignored.
    options: ClassVar[tuple[str, ...]] = ()
    #: Whether jobs can reach this machine's run store (then single runs checkpoint into it).
    shares_store: bool = True
    #: Whether jobs run in this process, and so see what it registered at run time (a dataset or
    #: model defined in the user's script); worker processes import memprox afresh and see only
    #: memprox's own, installed plugins and the modules a job names (`harness.worker_imports`).
    runs_jobs_here: ClassVar[bool] = False

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        """Check this executor's options; HarnessError for the first mistake. Called by
        `ExperimentConfig.validate`, before anything heavy is imported: no side effects."""
        return None

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: ExperimentConfig) -> Executor:
        """The executor a validated config asks for."""

    def placement(self, cfg: ExperimentConfig, device: torch.device) -> JobPlacement:
        """How jobs of this experiment see the machine: `--threads` torch threads each (default 1,
        whatever the executor, so results are the same bits under any executor and worker count),
        the experiment's device by name, `--gpus-per-run` of a GPU on CUDA."""
        threads = cfg.threads or 1
        on_gpu = device.type == "cuda"
        return JobPlacement(device=str(device), threads=threads, progress=False, num_cpus=float(threads),
                            num_gpus=float(cfg.gpus_per_run) if on_gpu else 0.0)

    @abstractmethod
    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        """Yield each job's outcome as it finishes. Closing the iterator early (Ctrl-C in the
        consumer, a storage error) cancels the jobs still outstanding. An executor that loses its
        workers altogether raises a StorageError subclass (`WorkersLost`): one line, exit 1."""

    def start(self) -> None:
        """Reach the workers before anything is written (idempotent; `run` starts them too): a cluster
        that cannot be joined is refused before the run store is created."""
        return None

    def close(self) -> None:
        """Let go of workers kept between `run` calls (idempotent; a later `run` starts anew)."""
        return None

    def take_finished(self) -> list[Outcome]:
        """After a `run` iterator closed early (Ctrl-C): the outcomes finished since the last one handed
        out, which the consumer stores before it stops, so that the rerun does not train them again. The
        consumer keeps the one handed out itself (it may come back here too; each run is stored once).
        An executor that keeps none (one job at a time in this process) returns []."""
        return []


def progress_bar(total: int, enabled: bool) -> tqdm:
    return tqdm(total=total, desc="jobs", unit="job", disable=not enabled or not total)


def check_workers(cfg: ExperimentConfig) -> None:
    if cfg.workers is not None:
        check_integer(cfg.workers, "worker count", "--workers", minimum=1, maximum=MAX_THREADS)


def warn_if_oversubscribed(workers: int, threads: int, cpus: int, fix: str = "lower --workers or --threads") -> None:
    """One warning when `workers` jobs of `threads` torch threads each exceed the usable CPUs:
    allowed (the user asked for it), but each run then waits for threads the scheduler parks. `fix`
    names only options the executor takes (inprocess has no --workers)."""
    if workers * threads > cpus:
        warnings.warn(f"{workers} worker(s) x {threads} torch thread(s) = {workers * threads} threads on {cpus} "
                      f"usable CPU(s): they will compete for the CPUs and every run slows down; {fix} "
                      "(see 'Threads and workers' in docs/executors.md)", UserWarning, stacklevel=3)


def timed_out(job: Job, limit: float, checkpoints: bool) -> RunFailed:
    """The failure of a job stopped at its --job-timeout. Not retried: a hang (a deadlock, a frozen
    node) would most likely repeat and hold the experiment as long again. `checkpoints`: whether its
    runs wrote in-run checkpoints (where the workers see the store), which a rerun resumes from."""
    rerun = ("rerun to train it again from its last in-run checkpoint (written every --checkpoint-every s)"
             if checkpoints else "rerun to train it again (from its first epoch: its workers cannot see the store)")
    return RunFailed(f"job {job.label()}: stopped after {limit:g} s, its --job-timeout, and not retried (a hang "
                     f"would repeat); its runs are not stored. If it needs longer, raise --job-timeout; {rerun}")


def describe_exit(code: int | None) -> str:
    """`killed by SIGKILL`, `exit code 1`: how a worker process ended, for messages."""
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
