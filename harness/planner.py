"""Planning: which runs every proxy and task needs (with the union of their recorders), which of them
the store lacks, and the self-contained jobs that train those, placed by the executor.

Whatever can be wrong with the plan (classes too thin to split, a subset or label file the data
cannot take, input gradients asked of token ids) is refused here (`harness.plan_checks`), before
anything trains.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

import torch

from harness.config import ExperimentConfig
from harness.datasets import Dataset
from harness.ensemble_plan import can_ensemble, ensemble_chunks
from harness.errors import HarnessError
from harness.executors import Executor
from harness.jobs import DataSource, Job, Pending, prepared_data
from harness.machine import run_compiled, run_threads
from harness.model_registry import model_fingerprint
from harness.plan_checks import READ, READ_BACK, RESUMED, PlanChecks, warn_other_devices
from harness.prepared import PreparedData
from harness.recorders import RecorderRequest
from harness.runner import RunnerResult, not_recordable, recorded
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore, StoredRun
from harness.subsets import subset_indices
from harness.tasks import Setting, Task
from harness.upgrade_notice import Asker, warn_model_code, warn_upgraded
from harness.worker_imports import check_workers_know, job_imports
from proxies import Need, Proxy


def resolve_device(name: str) -> torch.device:
    """The device runs train on. Only devices this machine can train on are accepted: torch also
    parses names such as meta, mps (without Apple's GPU), cpu:9 or cuda:7 (with one GPU) that fail
    only later, deep inside training."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, str) and name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    valid = ["auto", "cpu"]
    if torch.cuda.is_available():
        valid += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        valid.append("mps")
    if name not in valid:
        raise HarnessError(f"device {name!r} is not available on this machine; valid: {', '.join(valid)}")
    return torch.device(name)


@dataclass
class Plan:
    settings: list[tuple[Task, Setting, RunSpec]]
    runs: dict[RunSpec, set[RecorderRequest]]  # every distinct run with the union of its recorders
    #: per run, per recorder key: the proxies and tasks that asked for it (named when a stored run trains again)
    askers: dict[RunSpec, dict[str, set[Asker]]] = field(default_factory=dict)
    proxies: list[str] | None = None  # the selected proxies' labels, in order (None: not known)


class Planner:
    """Plans an experiment's runs on its dataset; turns what the store lacks into jobs the executor placed."""

    def __init__(self, cfg: ExperimentConfig, source: DataSource, dataset: Dataset, device: torch.device,
                 store: RunStore) -> None:
        self.cfg, self.source, self.dataset, self.device, self.store = cfg, source, dataset, device, store
        if (cfg.gpus_per_run or 1.0) != 1.0 and device.type != "cuda":
            warnings.warn(f"--gpus-per-run {cfg.gpus_per_run:g} has no effect: this experiment runs on {device}, and "
                          "only runs on a CUDA GPU share it", stacklevel=3)
        if cfg.recipe.precision == "bf16" and device.type == "cpu":  # docs/experiments.md, Precision and memory format
            warnings.warn("bf16 on the CPU is about 8x slower than fp32 here; pass --precision fp32 (bf16 is a GPU "
                          "option: the gpu preset sets it)", stacklevel=3)
        self.checks = PlanChecks(cfg, dataset, self.prepared)  # refused before anything trains

    def prepared(self, spec: DataSpec) -> PreparedData:
        return prepared_data(self.source, spec, self.device)

    @cached_property
    def model_sha(self) -> str:
        """The model's code digest, once per experiment: a user's project of 150 modules took about 1 s a digest,
        once for each of an experiment's settings (attdig2_31)."""
        return model_fingerprint(self.cfg.model)

    def base_spec(self, setting: Setting) -> RunSpec:
        return RunSpec(data=setting.data, model=self.cfg.model, recipe=self.cfg.recipe, seed=setting.seed,
                       model_sha=self.model_sha)

    def plan(self, tasks: list[Task], proxies: list[Proxy]) -> Plan:
        """Every task's settings (each task given the loaded dataset) with their base runs, and
        every distinct run the proxies and tasks need, with the union of their recorders."""
        self.checks.classes()
        base_data = DataSpec(dataset=self.cfg.dataset, subset=self.cfg.subset, dataset_sha=self.dataset.fingerprint)
        settings: list[tuple[Task, Setting, RunSpec]] = []
        runs: defaultdict[RunSpec, set[RecorderRequest]] = defaultdict(set)
        askers: defaultdict[RunSpec, defaultdict[str, set[Asker]]] = defaultdict(lambda: defaultdict(set))
        for task in tasks:
            for setting in task.settings(self.cfg, base_data, self.dataset):
                base = self.base_spec(setting)
                settings.append((task, setting, base))
                needs = [(n, ("proxy", p.label)) for p in proxies for n in _needs(p, base)]
                for need, asker in needs + [(n, ("task", task.name)) for n in task.needs(setting, base, self.cfg)]:
                    runs[need.spec] |= set(need.recorders)
                    for request in need.recorders:
                        askers[need.spec][request.key].add(asker)
        self.checks.input_gradients(runs, proxies, settings)
        for spec in runs:  # surface data and subset errors (label file, folds of tiny classes) before training
            labels = self.prepared(spec.data).labels
            for part in (spec.train_on, spec.then_on):
                if part is not None:
                    self.checks.last_batch(spec, len(subset_indices(part, labels)))
        return Plan(settings, dict(runs), {spec: dict(keys) for spec, keys in askers.items()},
                    [p.label for p in proxies])

    def pending(self, plan: Plan) -> tuple[dict[RunSpec, StoredRun], Pending]:
        """Stored runs that already carry every wanted recorder, and what is left to train (with
        the recorders a stored entry has, so an upgraded entry keeps them)."""
        done, todo, dropped, upgraded = {}, [], {}, {}
        order = sorted(plan.runs.items(), key=lambda kv: (str(kv[0].data), kv[0].seed, kv[0].digest()))
        for spec, wanted in order:
            stored = self.store.get(spec)
            if stored is not None and {r.key for r in wanted} <= stored.recorders:
                done[spec] = stored
                continue
            todo.append((spec, set(wanted) | recorded(stored)))  # an upgraded entry keeps what it recorded
            if stored is not None:
                upgraded[spec] = {r.key for r in wanted} - stored.recorders
                if lost := not_recordable(stored):
                    dropped[spec.label()] = lost
        self.warn_read(done, plan)
        warn_model_code(self.store.root, [spec for spec, _ in todo if spec not in upgraded])
        # `--proxies all` has nothing to drop a proxy from: the way names the rest (not with --proxy-arg,
        # which a pasted label's parameters would repeat, refused)
        paste = self.cfg.proxies.strip() == "all" and not self.cfg.proxy_args
        warn_upgraded(upgraded, plan.askers, {id(t): t for t, _, _ in plan.settings}.values(), plan.proxies, paste)
        warn_dropped(dropped)
        return done, todo

    def warn_read(self, done: dict[RunSpec, StoredRun], plan: Plan, what: str = READ) -> None:
        """One line for each way runs read from the store differ from a fresh run of this experiment (another
        thread count, kind of device, --compile or engine): their numbers are not the ones it gives."""
        warn_other_threads(done, self.cfg.threads or 1, self.device, what)
        warn_other_devices(done, self.device, what)
        warn_other_compile(done, bool(self.cfg.compile), what)
        warn_other_engines(done, plan.runs, self.device, self.dataset.x_train, what)

    def warn_read_back(self, plan: Plan, done: dict[RunSpec, StoredRun], ran: RunnerResult) -> RunnerResult:
        """`warn_read` for the runs the runner read back after waiting for their locks: another experiment on
        the store trained them meanwhile (two started together), after `pending` had looked. Those were
        reused without a word: an experiment at --threads 2 started beside one at 1 thread reported the
        other's 1-thread numbers, the same bytes a later rerun warns about. And for the runs it resumed from a
        checkpoint written at another thread count (the other experiment's, killed while this one waited, or
        its own earlier run's): their first epochs are that count's, and only the next experiment was told.
        The experiment calls this once its runs are trained (`Runner.run`); `ran` is returned as it came."""
        trained = set(ran.trained)
        read = {spec: run for spec, run in ran.runs.items() if spec not in done and spec.label() not in trained}
        self.warn_read(read, plan, READ_BACK)
        resumed = {spec: run for spec, run in ran.runs.items() if spec.label() in ran.resumed}
        warn_other_threads(resumed, self.cfg.threads or 1, self.device, RESUMED)
        warn_other_compile(resumed, bool(self.cfg.compile), RESUMED)
        return ran

    def jobs(self, pending: Pending, device: torch.device, executor: Executor) -> list[Job]:
        """Self-contained jobs for the pending runs. A spec that trains on part of the data (a fold,
        a stability model) and can be an ensemble member trains in the ensemble engine, always (even
        alone), so how a spec is trained depends only on the spec and the device type; members
        sharing data, model, recipe and recorders train together, in chunks of
        `harness.ensemble_plan.ensemble_chunks`. A run on all the data always trains alone
        (`trains_batched`)."""
        check_workers_know(pending, executor)
        groups: dict[tuple, list[RunSpec]] = defaultdict(list)
        singles: Pending = []
        for spec, requests in pending:
            if trains_batched(spec, requests, device, self.dataset.x_train):
                groups[(spec.data, spec.model, spec.recipe, frozenset(requests))].append(spec)
            else:
                singles.append((spec, requests))
        if self.cfg.compile and groups:
            warnings.warn("--compile applies to runs trained alone; runs trained in the batched ensemble engine "
                          "(torch.func.vmap: every run whose model and recorders allow it, e.g. the stability "
                          "models) run eagerly", stacklevel=2)
        jobs = []
        for (data, _, _, requests), specs in groups.items():
            prepared = prepared_data(self.source, data, device)
            for chunk in ensemble_chunks(specs, prepared, gpu_fraction=self.cfg.gpus_per_run or 1.0):
                jobs.append(self._job(tuple(specs[i] for i in chunk), requests, "ensemble", device, executor))
        jobs += [self._job((spec, ), requests, "single", device, executor) for spec, requests in singles]
        return jobs

    def _job(self, specs: tuple[RunSpec, ...], requests, engine: str, device: torch.device,
             executor: Executor) -> Job:
        """A job as the executor places it: it says how jobs see the device, threads and the store."""
        cfg = self.cfg
        placed = executor.placement(cfg, device)
        imports = job_imports(specs, requests, executor)
        ordered = tuple(sorted(requests, key=lambda r: r.key))
        return Job(
            specs=specs, requests=ordered, engine=engine, source=self.source,
            device=placed.device, threads=placed.threads, compile=cfg.compile,
            checkpoint_root=str(self.store.root) if executor.shares_store else None,
            checkpoint_every_s=cfg.checkpoint_every_s, progress=placed.progress,
            num_cpus=placed.num_cpus, num_gpus=placed.num_gpus, imports=imports,
            keys=tuple(r.key for r in ordered) if imports else ())


def trains_batched(spec: RunSpec, requests, device: torch.device, inputs: torch.Tensor) -> bool:
    """Whether the planner gives `spec` to the ensemble engine: a run on part of the data that can be
    a member (`can_ensemble`). A base run (all the data) is every proxy's, and the recorders it
    carries are the union of the selected proxies' (final_loss alone: the eval pass only, batchable;
    with csl: per-batch losses, not), so choosing its engine by its recorders made final_loss's
    scores depend on which other proxies were selected (AUROC 5e-6, per-sample 4e-4 apart on digits,
    40 epochs). Alone always, its numbers are the same whichever proxies share it."""
    on_part = spec.train_on is not None and spec.train_on.kind != "all"
    return on_part and can_ensemble(spec, requests, device, inputs)


def warn_other_threads(done: dict[RunSpec, StoredRun], threads: int, device: torch.device, what: str = READ) -> None:
    """One line when runs read back from the store were trained on a CPU with another torch thread
    count than this experiment's. The count is not in a run's address, yet it changes the run's
    numbers (reductions split differently; after 40 digits epochs csl scores moved by up to 12 and
    an AUROC by 1.5e-3), so such an experiment reports those threads' numbers, not a fresh run's."""
    if device.type != "cpu":
        return
    trained = {spec: run_threads(r.manifest.machine) | {r.manifest.threads} for spec, r in done.items()
               if r.manifest.device.startswith("cpu")}  # a run resumed at another count trained at both
    other = sorted({t for counts in trained.values() for t in counts if t != threads})
    if other:
        count = sum(bool(counts - {threads}) for counts in trained.values())
        mixed = sum(len(counts) > 1 for counts in trained.values() if counts - {threads})
        warnings.warn(f"{count} run(s) {what} were trained with {'/'.join(map(str, other))} torch "
                      f"thread(s), this experiment trains with {threads}: a CPU run's numbers depend on its thread "
                      "count, so these are not the numbers a fresh run here gives; "
                      + (f"pass --threads {other[0]} to match them, or another --store to retrain" if not mixed else
                         f"{_mix(mixed, count)} thread counts (resumed at another), which no --threads value matches: "
                         "pass another --store to retrain"), stacklevel=3)


def warn_other_compile(done: dict[RunSpec, StoredRun], compile: bool, what: str = READ) -> None:
    """One line when single runs read back from the store were trained compiled while this experiment
    trains eager, or the other way round: `--compile` is not in a run's address, and the two agree
    only to rounding. Each segment of a resumed run counts (`run_compiled`: a run killed under --compile
    and resumed without it is both); runs whose manifest predates the record (None) are not counted."""
    ways = [{*run_compiled(r.manifest.machine), r.manifest.compiled} for r in done.values()
            if r.manifest.engine == "single"]
    other = [way for way in ways if (not compile) in way]
    if other:
        was, now = ("with", "without") if not compile else ("without", "with")
        mixed = sum(compile in way for way in other)
        warnings.warn(f"{len(other)} run(s) {what} were trained {was} --compile, this experiment "
                      f"trains {now} it: compiled and eager runs agree only to rounding, so these are not the numbers "
                      "a fresh run here gives; " + (f"{'drop' if compile else 'pass'} --compile to match them, or "
                                                   "another --store to retrain" if not mixed else
                                                   f"{_mix(mixed, len(other))} compiled and eager epochs (resumed "
                                                   "the other way), which neither choice matches: pass another "
                                                   "--store to retrain"), stacklevel=3)


def _mix(mixed: int, count: int) -> str:
    """Who of the `count` runs a warning names mix two settings: a run resumed under another one was trained
    under both, and the advice to pass the other setting led to the same warning from the other side."""
    return "they mix" if mixed == count else f"{mixed} of them mix"


def warn_other_engines(done: dict[RunSpec, StoredRun], wanted: dict[RunSpec, set[RecorderRequest]],
                       device: torch.device, inputs: torch.Tensor, what: str = READ) -> None:
    """One line when runs read from the store were trained in another engine than a fresh run of this
    experiment would be, on this kind of device. A fold or stability model that carries a recorder
    the ensemble engine cannot record (a plugin's, from an earlier experiment) trained alone; reused
    where only the last eval pass is wanted, its numbers are the single engine's, which agree with the
    ensemble engine's to float rounding, not bitwise, and nothing said so."""
    def engine(spec: RunSpec) -> str:
        return "ensemble" if trains_batched(spec, wanted[spec], device, inputs) else "single"

    other = [spec for spec, run in done.items()
             if run.manifest.device.partition(":")[0] == device.type and run.manifest.engine != engine(spec)]
    if other:
        warnings.warn(f"{len(other)} run(s) {what} ({other[0].label()}{', ...' if len(other) > 1 else ''})"
                      " were trained in another engine than this experiment trains them in (their recorders then "
                      "differed): the single and ensemble engines agree to float rounding, not bitwise, so these "
                      "are not the numbers a fresh run here gives; pass another --store to retrain them",
                      stacklevel=3)


def warn_dropped(dropped: dict[str, list[str]]) -> None:
    """One line when runs trained again to add recorders lose stored ones this process cannot record
    (a plugin's not registered here): an experiment that needs those trains the run once more."""
    if dropped:
        keys = sorted({k for lost in dropped.values() for k in lost})
        first = next(iter(dropped))
        warnings.warn(f"{len(dropped)} stored run(s) ({first}{', ...' if len(dropped) > 1 else ''}) train again to "
                      f"add recorders and lose their recorder(s) {', '.join(keys)}, which are not registered in "
                      "this process (a plugin's, from a script or a module not imported here): an experiment "
                      "that needs them trains those runs again", stacklevel=3)


def _needs(proxy: Proxy, base: RunSpec) -> list[Need]:
    """The proxy's needs; a need it declares wrongly (an unknown recorder) names the proxy: under
    --proxies all, or a plugin's proxy, the message named the recorder and the run, not whose it was."""
    try:
        return proxy.needs(base)
    except HarnessError as e:
        raise HarnessError(f"proxy {proxy.label}: {e}") from None

