"""`--executor inprocess`: jobs one after another in this process. For debugging and tests: a
traceback points straight into training, monkeypatches apply, nothing is spawned. Exceptions other
than a failed run propagate unchanged, so a bug shows its traceback. Jobs run with the same torch
threads as under any other executor (`--threads`, default 1), so the bits are the same; the thread
count is set on this process and stays set under the CLI, while `harness.api.run_experiment` puts the
caller's threads and RNGs back (`host_state_kept`) and trains under torch's defaults, not the caller's
(`torch_defaults`: a notebook's `no_grad()` or float64 default dtype). Nothing is spawned, so no
fresh process compares the code digests of a user's model and recorders (a module value set anew in
every process gives runs that are never reused, not wrong ones); a model or recorder whose file was
edited since its import, which this process would run as imported under the edited file's digest, is
refused (`harness.worker_imports.check_workers_know`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from harness.executors import register_executor
from harness.executors.base import Executor, JobFn, JobPlacement, Outcome, progress_bar, warn_if_oversubscribed
from harness.executors.cpus import usable_cpus

if TYPE_CHECKING:
    import torch

    from harness.config import ExperimentConfig
    from harness.jobs import Job


@register_executor
class InProcessExecutor(Executor):
    name = "inprocess"
    description = "jobs one after another in this process (for debugging and tests)"
    runs_jobs_here = True

    def __init__(self, progress: bool = True, fn: JobFn | None = None) -> None:
        self.progress = progress
        self.fn = fn

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> InProcessExecutor:
        warn_if_oversubscribed(1, cfg.threads or 1, usable_cpus(), "lower --threads")  # one job at a time
        return cls(cfg.progress)

    def placement(self, cfg: ExperimentConfig, device: torch.device) -> JobPlacement:
        return replace(super().placement(cfg, device), progress=cfg.progress)  # the terminal is the job's own

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        from harness.jobs import run_job

        fn = self.fn or run_job
        with progress_bar(len(jobs), self.progress) as bar:
            for job in jobs:
                bar.set_postfix(running=1)
                result = fn(job)
                bar.update()
                yield job, result
