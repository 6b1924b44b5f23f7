"""Self-contained training jobs: what a worker (this process, or a Ray worker on another machine)
needs to train one run or one batched ensemble, and what it sends back.

A `Job` names its data (dataset, root, subset; the corruption travels in each spec's DataSpec),
never holds tensors or a reference to the Experiment, so it pickles small and runs anywhere the
package and the dataset are installed. `run_job` loads and prepares the data (decoded images come
from the cache in `harness.datasets`, prepared tensors from a small per-process cache), sets the
worker's torch threads and device, trains, and returns each run's arrays with its typed manifest.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.datasets import Dataset, load_dataset
from harness.ensemble import train_members
from harness.ensemble_checkpoint import ChunkCheckpoints
from harness.errors import HarnessError, RunFailed
from harness.machine import machine_record, trained_before, trained_by
from harness.manifest import ENGINES, Manifest, RecorderRecord
from harness.prepared import PreparedData, prepare
from harness.recorders import RecorderRequest
from harness.resuming import resuming_line
from harness.runspec import DataSpec, RunSpec
from harness.training import RunOutput, train_run

#: Runs still to train, each with the recorders it must carry (planned, claimed, turned into jobs).
Pending = list[tuple[RunSpec, set[RecorderRequest]]]


@dataclass(frozen=True)
class DataSource:
    """Where a worker loads the clean dataset from (the driver downloads before planning)."""

    dataset: str
    data_root: str | None = None
    subset: int | None = None


@dataclass(frozen=True)
class Job:
    specs: tuple[RunSpec, ...]  # one spec (engine "single") or the members of one ensemble chunk
    requests: tuple[RecorderRequest, ...]  # recorders every spec of the job records, sorted by key
    engine: str
    source: DataSource
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads of the job (the bits depend on it: every executor uses --threads)
    compile: bool = False  # torch.compile the training step (precision and memory format are the recipe's)
    checkpoint_root: str | None = None  # a run store the worker can reach: runs and ensembles checkpoint there
    checkpoint_every_s: float = 120.0
    progress: bool = False
    num_cpus: float = 1.0  # resources a scheduler reserves for the job
    num_gpus: float = 0.0
    imports: tuple[str, ...] = ()  # modules outside memprox that register its recorders, model or dataset
    keys: tuple[str, ...] = ()  # the requests' store keys as the planning process computed them (with imports)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES or not self.specs or (self.engine == "single" and len(self.specs) != 1):
            raise ValueError(f"bad job: engine {self.engine!r} with {len(self.specs)} specs")

    def label(self) -> str:
        if self.engine == "single":
            return self.specs[0].label()
        return f"ensemble of {len(self.specs)} ({self.specs[0].label()}, ...)"


@dataclass
class JobResult:
    """Per spec either (arrays, manifest) or a failure message."""

    outputs: dict[RunSpec, tuple[dict[str, dict[str, np.ndarray]], Manifest]] = field(default_factory=dict)
    failures: dict[RunSpec, str] = field(default_factory=dict)
    resumed: dict[RunSpec, int] = field(default_factory=dict)  # spec -> the epoch its checkpoint resumed it at


# per-process caches: a worker that gets several jobs on one dataset loads and prepares it once
_DATASETS: OrderedDict[DataSource, Dataset] = OrderedDict()
_PREPARED: OrderedDict[tuple[DataSpec, str], PreparedData] = OrderedDict()


def load_source(source: DataSource, download: bool = False, fingerprint: str | None = None) -> Dataset:
    """The dataset, from this process's cache when its content fingerprint is the one asked for.

    `fingerprint=None` always reloads: a file-backed dataset (npz, image folder) may have been
    edited since it was cached, and a notebook or a long-lived Ray worker would otherwise train
    the old contents under the new contents' address."""
    cached = _DATASETS.get(source)
    if cached is None or fingerprint is None or cached.fingerprint != fingerprint:
        root = Path(source.data_root) if source.data_root else None
        cached = load_dataset(source.dataset, data_root=root, download=download, subset=source.subset)
        _DATASETS[source] = cached
        _DATASETS.move_to_end(source)
        while len(_DATASETS) > 2:
            _DATASETS.popitem(last=False)
    if fingerprint is not None and cached.fingerprint != fingerprint:
        raise HarnessError(f"dataset {source.dataset} changed while the experiment ran (its content fingerprint "
                           "differs from the planned one); rerun the experiment on the final data")
    return cached


def release_device_data() -> None:
    """Drop the prepared data this process holds on an accelerator. A notebook's `run_experiment`
    on a GPU (the model check, the in-process executor) left up to 4 prepared datasets in GPU
    memory after it returned, taken from the notebook's own training; host copies stay cached."""
    for key in [k for k in _PREPARED if torch.device(k[1]).type != "cpu"]:
        del _PREPARED[key]


def prepared_data(source: DataSource, spec: DataSpec, device: torch.device) -> PreparedData:
    """A job's data. Loading it says nothing: the driver loaded this source before planning and showed
    its warnings once, and every worker process repeated them on its first job, raw. Rebuilt where this
    process has loaded the source anew since (a notebook's next call, whose planning reloads it): the
    fingerprint leaves some layout out on purpose (an image folder's `train/` level), which the sample
    names keep, so the old one named files that had moved."""
    key = (spec, str(device))
    latest = _DATASETS.get(source)
    held = _PREPARED.get(key)
    if held is None or (latest is not None and latest.fingerprint == spec.dataset_sha and held.dataset is not latest):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dataset = load_source(source, fingerprint=spec.dataset_sha)
        held = prepare(spec, dataset, device)
        _PREPARED.pop(key, None)  # the newest last, so that trimming keeps it
        _PREPARED[key] = held
        _trim_prepared()
    return held


def _holds_memory(data: PreparedData) -> bool:
    """Whether a prepared entry keeps memory of its own: a device copy, a corrupted copy (duplicates) or a
    dataset this process no longer caches. A CPU entry of a noise or label-file corruption is a view of a
    cached dataset's images with labels of its own (17 bytes a sample)."""
    return (data.x.device.type != "cpu" or data.x.data_ptr() != data.dataset.x_train.data_ptr()
            or not any(data.dataset is d for d in _DATASETS.values()))


#: the most prepared entries kept in all, views of a cached dataset included: each holds labels of its own
#: (17 bytes a sample, 850 kB for 50,000 images), and a notebook's or a long-lived worker's sweep of noise
#: seeds kept every one it ever prepared (1,000 settings: 850 MB)
MAX_PREPARED = 64


def _trim_prepared() -> None:
    """At most 4 entries that hold memory of their own and `MAX_PREPARED` in all, the oldest dropped first.
    All entries counted against 4, an experiment of more than 4 corruptions (3 noise rates x 2 seeds and a
    clean run: 7) prepared each 3 or 4 times, and each prepare reads every image for its channel statistics."""
    for key in [k for k, data in _PREPARED.items() if _holds_memory(data)][:-4]:
        del _PREPARED[key]
    while len(_PREPARED) > MAX_PREPARED:
        _PREPARED.popitem(last=False)


def make_manifest(spec: RunSpec, out: RunOutput, engine: str, device: str, requests: tuple[RecorderRequest, ...] = (),
                  wall: float = 0.0, before: list[dict] | None = None, compiled: bool = False) -> Manifest:
    """The manifest of a finished run (checksums are the store's to fill in), made in the process that
    trained it: its threads, package versions and machine (`harness.machine`) are the training's, and
    the machines that trained the epochs of the checkpoint it resumed (`before`) are recorded too."""
    by_key = {r.key: r for r in requests}
    here = machine_record(device, compiled if engine == "single" else None)  # --compile is single runs' alone
    return Manifest(
        spec=json.loads(json.dumps(spec.to_dict(), default=str)), spec_hash=spec.digest(), label=spec.label(),
        engine=engine, device=device, machine=trained_by(before or [], here, total_epochs(spec)),
        threads=torch.get_num_threads(), train_seconds=out.train_seconds, train_flops=out.train_flops,
        train_acc=out.train_acc, test_acc=out.test_acc, history=out.history, wall_seconds=wall, compiled=compiled,
        recorders={k: RecorderRecord(arrays=sorted(a), seconds=out.recorder_seconds[k], flops=out.recorder_flops[k],
                                     name=by_key[k].name if k in by_key else "",
                                     params=[list(p) for p in by_key[k].params] if k in by_key else [])
                   for k, a in out.arrays.items()},
    )


#: Thread-pool sizes of the native libraries a worker may load (OpenMP, MKL, OpenBLAS). A worker
#: process gets them in its environment before it starts (they are read when a library loads).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARIABLES}


def configure_threads(threads: int) -> None:
    """A worker process's thread set-up, once when it starts and before its first job: `threads`
    intra-op and inter-op torch threads (inter-op threads can be set only once, before any parallel
    work), and the same in the thread variables for any library loaded later. A worker then never
    runs more threads than the pool reserved for it."""
    os.environ.update(thread_environment(threads))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass


def _keys_refused(job: Job) -> JobResult | None:
    """A user's recorder is keyed by a digest of its code and the module values it reads: a value that
    differs on the worker's machine (a path from `__file__`, an environment variable) stored its arrays
    under a key the planning process never looks up, so every proxy reading it failed and every rerun
    trained again. The fresh-process check before training sees only the planning machine. The refusal
    is each run's failure line, not an exception: the local pool's worker and Ray's printed a traceback
    of it for every job, around the one line that says it."""
    here = tuple(r.key for r in job.requests)
    if not job.keys or here == job.keys:
        return None
    differ = "; ".join(f"{mine} here, {theirs} where it was planned"
                       for mine, theirs in zip(here, job.keys, strict=True) if mine != theirs)
    why = (f"job {job.label()}: recorder keys differ on this worker ({differ}): the recorder's code, or a module "
           "value it reads, is not the same here as where the experiment was planned; install the same code on every "
           "machine and make such a value a constant of its module (docs/extending.md)")
    return JobResult(failures={spec: why for spec in job.specs})


def run_job(job: Job) -> JobResult:
    """Train the job's runs; a run whose loss became non-finite is a failure, not an exception."""
    if torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)
    if job.imports:  # a worker process: a plugin's recorder, a model of the user's module (`harness.worker_imports`)
        from harness.worker_imports import import_modules

        import_modules(job.imports)
        if (refused := _keys_refused(job)) is not None:
            return refused
    device = torch.device(job.device)
    data = prepared_data(job.source, job.specs[0].data, device)
    result = JobResult()
    t0 = time.perf_counter()
    if job.engine == "ensemble":
        store = _checkpoint_store(job)
        checkpoints = ChunkCheckpoints(store, [r.key for r in job.requests], job.checkpoint_every_s,
                                       machine=lambda: machine_record(job.device)) if store else None
        outs = train_members(job.specs, data, job.requests, progress=job.progress, max_members=len(job.specs),
                             checkpoints=checkpoints)
        result.resumed.update(checkpoints.resumed if checkpoints else {})
        before = checkpoints.before if checkpoints else []
    else:
        out, state = _train_single(job, data)
        outs = [out]
        if state is not None:
            result.resumed[job.specs[0]] = int(state["epoch"])
        before = trained_before(state)
    wall = (time.perf_counter() - t0) / len(job.specs)
    for spec, out in zip(job.specs, outs, strict=True):
        if isinstance(out, RunFailed):
            result.failures[spec] = str(out)
        else:
            result.outputs[spec] = (out.arrays, make_manifest(spec, out, job.engine, job.device, job.requests, wall,
                                                              before, job.compile and job.engine == "single"))
    return result


def total_epochs(spec: RunSpec) -> int:
    """The run's epochs, both phases of a two-phase run counted (as its checkpoints count them)."""
    return spec.recipe.epochs * (1 if spec.then_on is None else 2)


def resume_line(spec: RunSpec, epoch: int) -> str:
    """The line a run resumed from its checkpoint prints: which run, from which epoch of how many."""
    return resuming_line(spec.label(), epoch, total_epochs(spec))


def _checkpoint_store(job: Job):
    """The run store checkpoints go to, when the job's worker reaches one."""
    from harness.store import RunStore  # checkpoints go through the store's paths and atomic writes

    return RunStore(job.checkpoint_root) if job.checkpoint_root else None


def _single_state(store, spec: RunSpec, keys: list[str]) -> dict | None:
    """The run's checkpoint, unless it is an ensemble member's (the spec trained batched on another
    device type): that holds rows of a chunk, not a model, and is ignored with one line."""
    state = store.load_checkpoint(spec, keys) if store else None
    if state is not None and state.get("engine") == "ensemble":
        warnings.warn(f"checkpoint {store.checkpoint_path(spec)} is of {spec.label()} as a member of a batched "
                      "ensemble, which this run is not trained in here; ignoring it and restarting that run")
        return None
    return state


def _train_single(job: Job, data: PreparedData) -> tuple[RunOutput | RunFailed, dict | None]:
    """The run, and the checkpoint it resumed (None: trained from the start)."""
    (spec,) = job.specs
    keys = [r.key for r in job.requests]
    store = _checkpoint_store(job)

    def checkpoint(state: dict) -> None:
        """A checkpoint only saves time after a kill: one that cannot be written is a warning."""
        try:
            machine = trained_by(before, machine_record(job.device, job.compile), int(state["epoch"]))
            store.save_checkpoint(spec, {**state, "machine": machine}, keys)  # the machines of its epochs
        except OSError as e:
            warnings.warn(f"cannot write a checkpoint of {spec.label()} under {store.root / 'partial'} "
                          f"({e.strerror or e}); training goes on without it")

    state = _single_state(store, spec, keys)
    before = trained_before(state)
    if state is not None:  # said as it happens: a kill before the run is stored would hide it otherwise
        print(resume_line(spec, int(state["epoch"])), file=sys.stderr, flush=True)
    try:
        return train_run(
            spec, data, list(job.requests),
            resume_state=state,
            checkpoint=checkpoint if store else None,
            checkpoint_every_s=job.checkpoint_every_s,
            progress=job.progress,
            compile=job.compile,
        ), state
    except RunFailed as e:
        return e, state
