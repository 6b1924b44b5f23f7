"""Run jobs on Ray: a local Ray on this machine (`--workers N`), or an existing cluster
(`--ray-address`), each job reserving `num_cpus` (its torch threads) and `num_gpus`.

Results travel back to the driver through Ray's object store and the driver writes the run store,
so the workers need the package and the dataset, not the store. A job whose worker dies (killed,
out of memory, node lost) is retried once by Ray (`max_retries=1`) and then reported as failed;
an exception inside a job is not retried (it would fail the same way). Ray's token authentication
is left as Ray configures it (on by default for local clusters since Ray 2.59).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from harness.errors import HarnessError, RunFailed
from harness.executor import JobFn, Outcome, progress_bar
from harness.jobs import Job, run_job

try:
    import ray
    from ray.exceptions import RayTaskError
except ImportError:  # the optional extra
    ray = None  # type: ignore[assignment]

#: Retries of a job whose worker process or node died.
MAX_RETRIES = 1


def _call(fn: JobFn, job: Job):
    """The remote task: `fn` travels as an argument, so any picklable callable (a partial) works."""
    return fn(job)


class RayExecutor:
    def __init__(self, workers: int | None = None, address: str | None = None, progress: bool = True,
                 fn: JobFn = run_job) -> None:
        if ray is None:
            raise HarnessError("--executor ray needs Ray, an optional extra: pip install -e '.[ray]' "
                               "(or pip install 'memprox[ray]')")
        if workers is not None and workers < 1:
            raise HarnessError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.address = address
        self.progress = progress
        self.fn = fn
        self.started_ray = False

    @property
    def shares_store(self) -> bool:
        """A local Ray shares this machine's file system; a remote cluster may not."""
        return self.address is None

    def job_threads(self, threads: int | None) -> int:
        return threads or 1  # one thread per job: workers, not threads, are the parallelism

    def _init(self) -> None:
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            self.started_ray = True

    def shutdown(self) -> None:
        """Stop the local Ray this executor started (a cluster it joined keeps running)."""
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
        self.started_ray = False

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        if not jobs:
            return
        self._init()
        remote = ray.remote(_call)
        fn = ray.put(self.fn)
        pending = {
            remote.options(num_cpus=job.num_cpus, num_gpus=job.num_gpus, max_retries=MAX_RETRIES,
                           retry_exceptions=False, name=job.label()[:100]).remote(fn, job): job
            for job in jobs
        }
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(j.num_cpus for j in jobs)))
        try:
            with progress_bar(len(jobs), self.progress) as bar:
                while pending:
                    bar.set_postfix(running=min(slots, len(pending)))
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    job = pending.pop(ref)
                    try:
                        outcome: object = ray.get(ref)
                    except RayTaskError as e:  # the job raised: report it, do not retry
                        outcome = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
                    except ray.exceptions.RayError as e:  # the worker or its node died, twice
                        outcome = RunFailed(f"job {job.label()}: its worker died {MAX_RETRIES + 1} times "
                                            f"({type(e).__name__}); the runs of this job are not stored")
                    bar.update()
                    yield job, outcome  # type: ignore[misc]
        finally:  # normal end: nothing left; Ctrl-C or a consumer error: cancel what is outstanding
            for ref in pending:
                ray.cancel(ref, force=True)
