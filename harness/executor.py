"""Executors run training jobs (`harness.jobs.Job`) and hand back their results as they finish.

`LocalExecutor` runs them in this process, one after another (the default, and what tests use);
`harness.ray_executor.RayExecutor` runs them on a local or remote Ray cluster. Both show one
progress bar over jobs. The driver owns the store: it writes each result as it arrives, in any
order, so a worker needs no access to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from tqdm.auto import tqdm

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.jobs import Job, JobResult, run_job

JobFn = Callable[[Job], JobResult]
#: A finished job: its result, or the exception that ended it (a worker that died twice, ...).
Outcome = tuple[Job, JobResult | BaseException]


class Executor(Protocol):
    #: Whether workers can reach this machine's run store (then single runs checkpoint there).
    shares_store: bool

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        """Yield each job's outcome as it finishes. Closing the iterator early (Ctrl-C in the
        consumer, a storage error) cancels the jobs still outstanding. An executor that loses
        its workers altogether (a Ray cluster gone) raises a StorageError subclass: one line,
        exit 1, the runs already stored are kept."""
        ...

    def job_threads(self, threads: int | None) -> int | None:
        """Torch threads for each job given the configured threads."""
        ...


def progress_bar(total: int, enabled: bool) -> tqdm:
    return tqdm(total=total, desc="jobs", unit="job", disable=not enabled or not total)


class LocalExecutor:
    """Jobs in this process, in order. Exceptions other than a failed run propagate unchanged,
    as they always did, so a bug shows its traceback."""

    shares_store = True

    def __init__(self, progress: bool = True, fn: JobFn = run_job) -> None:
        self.progress = progress
        self.fn = fn

    def job_threads(self, threads: int | None) -> int | None:
        return threads

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        with progress_bar(len(jobs), self.progress) as bar:
            for job in jobs:
                bar.set_postfix(running=1)
                result = self.fn(job)
                bar.update()
                yield job, result


def make_executor(cfg: ExperimentConfig) -> Executor:
    """The executor `cfg.executor` names (HarnessError for an unknown one, or ray not installed)."""
    if cfg.executor == "local":
        return LocalExecutor(cfg.progress)
    if cfg.executor == "ray":
        from harness.ray_executor import RayExecutor

        return RayExecutor(workers=cfg.workers, address=cfg.ray_address, progress=cfg.progress)
    raise HarnessError(f"unknown executor {cfg.executor!r}; use local or ray")
