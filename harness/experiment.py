"""An experiment end to end, as a script of its stages: plan the runs every proxy and task needs
(`harness.planner`), train what the store lacks and store it (`harness.runner`), score and evaluate
(`harness.evaluation`), and write the outputs (`harness.outputs`).

Everything that can be wrong with the input (and an unwritable store or output folder) is checked before the
first run trains, so bad input costs nothing and leaves no partial output. A run that fails (non-finite loss,
a worker that died twice) is reported and the rest still finishes. Store entries are claimed with per-entry
locks, so experiments sharing a store train each spec once. Outputs are staged beside `--out` (inside it when
it is a mount point) and published at the end with rollback.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from harness.config import RUNTIME_FIELDS, ExperimentConfig, data_folders, experiment_id
from harness.config_identity import former_ids
from harness.datasets import Dataset
from harness.errors import HarnessError, Interrupted, SubsetTooLarge
from harness.evaluation import RAW_COLUMNS, ExperimentResult, evaluate
from harness.executors import Executor, make_executor
from harness.jobs import DataSource, Job, Pending, load_source
from harness.models import MODELS
from harness.outputs import RECORD, STAGING_MARKER, check_out, staging, write
from harness.phases import PHASES, PhaseTimer, format_phases, single_blas_thread
from harness.planner import Plan, Planner, resolve_device
from harness.prepared import PreparedData
from harness.presets import announce_preset_cut, is_preset_subset
from harness.registry import did_you_mean
from harness.runner import Runner, RunnerResult
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore, StoredRun, default_store
from harness.tasks import Setting, make_tasks
from proxies import Proxy, resolve_proxies

__all__ = ["PHASES", "RAW_COLUMNS", "RECORD", "RUNTIME_FIELDS", "STAGING_MARKER", "Experiment", "ExperimentResult",
           "PhaseTimer", "Plan", "RunnerResult", "check_out", "default_store", "experiment_id", "format_phases",
           "resolve_device", "single_blas_thread"]


class Experiment:
    """Set up (checks, device, store, dataset, plan) in the constructor; `run()` does the rest."""

    def __init__(self, cfg: ExperimentConfig, executor: Executor | None = None) -> None:
        self.timer = PhaseTimer()
        t0 = time.perf_counter()
        self.cfg = cfg
        cfg.validate()
        self.proxies: list[Proxy] = resolve_proxies(cfg.proxies, cfg.proxy_args)  # a plugin may register the model
        self.tasks = make_tasks(cfg.tasks, cfg.task_args, cfg.reference)
        if cfg.model not in MODELS:
            raise HarnessError(f"unknown model {cfg.model!r}{did_you_mean([str(cfg.model)], MODELS)}; valid models: "
                               f"{', '.join(sorted(MODELS))}")
        for task in self.tasks:
            task.check_proxies(self.proxies)
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.executor = executor or make_executor(cfg)
        self._check_out()
        self.store = RunStore(cfg.store or default_store(), create=False)  # made when training starts
        self.store.check_writable()
        t1 = time.perf_counter()
        self.dataset: Dataset = self._load()
        cfg = self.cfg  # without the preset's subset if the dataset is smaller
        t2 = time.perf_counter()
        self.planner = Planner(cfg, self.source, self.dataset, self.device, self.store)
        self.plan: Plan = self.planner.plan(self.tasks, self.proxies)
        cfg.validate_for_data(self.dataset, {spec.model for spec in self.plan.runs}, len(self.proxies))
        self.timer.add("load", t2 - t1)
        self.timer.add("plan", time.perf_counter() - t0 - (t2 - t1))

    def _load(self) -> Dataset:
        """The dataset, cut to the subset. A preset's subset (quick: 4,000 images) is a cap: a smaller
        dataset is used whole, with a warning, rather than refused for a flag the user never passed."""
        cfg = self.cfg
        self.source = DataSource(cfg.dataset, str(cfg.data_root) if cfg.data_root else None, cfg.subset)
        try:
            return announce_preset_cut(load_source(self.source, download=cfg.download), cfg.preset, cfg.subset)
        except SubsetTooLarge as e:
            if not is_preset_subset(cfg.preset, cfg.dataset, cfg.subset):
                raise
            warnings.warn(f"the {cfg.preset} preset's subset of {cfg.subset} is more than the {e.available} training "
                          f"samples of {cfg.dataset}: all {e.available} are used", stacklevel=3)
        # the identity stays the command's (with the preset's subset): its next run checks --out with it
        # before it loads, so recording the identity without the subset made every rerun "another experiment"
        self.cfg = cfg = replace(cfg, subset=None)
        self.source = replace(self.source, subset=None)
        return load_source(self.source, download=cfg.download)

    def _check_out(self) -> None:
        """The experiment's identity, and --out checked against it (`harness.outputs.check_out`)."""
        cfg = self.cfg
        self.identity, self.former = experiment_id(cfg), former_ids(cfg)  # the command's: publish asks them too
        if cfg.out is not None:
            check_out(Path(cfg.out), self.identity, cfg.overwrite, Path(cfg.store or default_store()),
                      data_paths=data_folders(cfg), folders=sorted({f for t in self.tasks for f in t.folders}),
                      former=self.former, device=self.device.type)

    def base_spec(self, setting: Setting) -> RunSpec:
        return self.planner.base_spec(setting)

    def prepared(self, spec: DataSpec) -> PreparedData:
        return self.planner.prepared(spec)

    def pending(self) -> tuple[dict[RunSpec, StoredRun], Pending]:
        """Stored runs that already carry every wanted recorder, and what is left to train."""
        with self.timer("load"):
            return self.planner.pending(self.plan)

    def jobs(self, pending: Pending) -> list[Job]:
        """Jobs for `pending`, placed by this experiment's executor on its device."""
        return self.planner.jobs(pending, self.device, self.executor)

    def execute(self) -> RunnerResult:
        """Train what the store lacks and store it (`harness.runner.Runner.run`, which creates the store)."""
        done, todo = self.pending()
        ran = Runner(self.store, self.executor, self.plan.runs, self.jobs).run(done, todo)
        return self.planner.warn_read_back(self.plan, done, ran)  # of runs another process stored meanwhile

    def run(self) -> ExperimentResult:
        with self.timer("load"):
            if self.store.root.is_dir():  # a new store is created once the executor has its workers
                self.store.create()
                self.store.clean()
        loading = self.timer.seconds["load"]
        t0 = time.perf_counter()
        ran, published = self.execute(), False
        # execute's store lookups (`pending`) count as load; the rest is training and storing
        self.timer.add("train", time.perf_counter() - t0 - (self.timer.seconds["load"] - loading))
        try:
            with staging(self.cfg.out) as folder, single_blas_thread():
                result, artifacts = evaluate(self.cfg, self.plan, self.proxies, ran, self.prepared, self.timer, folder)
                if folder is not None:
                    with self.timer("write"):
                        write(result, ran.runs, folder, artifacts, self.cfg, self.identity, self.device,
                              self.timer.rounded, self.former)
                    published = True
        except KeyboardInterrupt:  # after publishing, only the emptied staging folder was being removed
            if not published:
                raise Interrupted(len(ran.runs)) from None
            warnings.warn(f"Ctrl-C came after every output was published to {self.cfg.out}: the run is complete")
        result.phase_seconds = self.timer.rounded()
        return result
