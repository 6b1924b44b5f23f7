"""An experiment end to end: plan the runs every proxy and task needs, run each distinct run once,
score, evaluate, and write the leaderboard.

Everything that can be wrong with the input is checked before the first run trains, so bad input
costs nothing and leaves no partial output; a run that fails (non-finite loss) is reported and the
rest of the experiment still finishes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.config import ExperimentConfig
from harness.data import Dataset, load_dataset
from harness.errors import HarnessError, RunFailed
from harness.executor import Executor, LocalExecutor
from harness.io import atomic_write, atomic_write_text
from harness.leaderboard import aggregate, markdown
from harness.models import MODELS
from harness.prepared import PreparedData, prepare
from harness.recorders import RecorderRequest
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore, StoredRun
from harness.subsets import subset_indices
from harness.tasks import EvalContext, Setting, Task, make_tasks
from harness.training import train_run
from proxies import Proxy, ScoreContext, resolve_proxies


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise HarnessError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def default_store() -> Path:
    return Path(os.environ.get("MEMPROX_CACHE", Path.home() / ".cache" / "memprox")) / "store"


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise HarnessError(f"output directory {out} is not writable ({e.strerror}); pass a writable --out") from e


@dataclass
class Plan:
    settings: list[tuple[Task, Setting, RunSpec]]
    runs: dict[RunSpec, set[RecorderRequest]]  # every distinct run with the union of its recorders


@dataclass
class ExperimentResult:
    raw: pd.DataFrame
    leaderboard: pd.DataFrame
    failures: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    outputs: dict[str, object] = field(default_factory=dict)
    base_train_acc: list[float] = field(default_factory=list)  # eval-mode, on the labels trained on


class Experiment:
    def __init__(self, cfg: ExperimentConfig, executor: Executor | None = None) -> None:
        self.cfg = cfg
        cfg.recipe.validate()
        if cfg.model not in MODELS:
            raise HarnessError(f"unknown model {cfg.model!r}; valid models: {', '.join(sorted(MODELS))}")
        if not cfg.seeds:
            raise HarnessError("no seeds given; pass e.g. --seeds 3")
        self.proxies: list[Proxy] = resolve_proxies(cfg.proxies, cfg.proxy_args)
        self.tasks = make_tasks(cfg.tasks)
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        check_writable(cfg.out)
        self.store = RunStore(cfg.store or default_store())
        self.dataset: Dataset = load_dataset(
            cfg.dataset, data_root=cfg.data_root, download=cfg.download, subset=cfg.subset
        )
        self.executor = executor or LocalExecutor(cfg.progress)
        self._prepared: dict[DataSpec, PreparedData] = {}
        self.plan = self._plan()

    # planning ---------------------------------------------------------------------------
    def base_spec(self, setting: Setting) -> RunSpec:
        return RunSpec(data=setting.data, model=self.cfg.model, recipe=self.cfg.recipe, seed=setting.seed)

    def _plan(self) -> Plan:
        base_data = DataSpec(dataset=self.cfg.dataset, subset=self.cfg.subset)
        settings, runs = [], defaultdict(set)
        for task in self.tasks:
            for setting in task.settings(self.cfg, base_data, self.dataset.n_train):
                base = self.base_spec(setting)
                settings.append((task, setting, base))
                for need in [n for p in self.proxies for n in p.needs(base)] + task.needs(setting, base, self.cfg):
                    runs[need.spec] |= set(need.recorders)
        for spec in runs:  # surface data and subset errors (label file, folds of tiny classes) before training
            labels = self.prepared(spec.data).labels
            for part in (spec.train_on, spec.then_on):
                if part is not None:
                    subset_indices(part, labels)
        return Plan(settings, dict(runs))

    def prepared(self, spec: DataSpec) -> PreparedData:
        if spec not in self._prepared:
            if len(self._prepared) >= 4:
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[spec] = prepare(spec, self.dataset, self.device)
        return self._prepared[spec]

    # execution --------------------------------------------------------------------------
    def _train_and_store(self, spec: RunSpec, requests: set[RecorderRequest]) -> StoredRun:
        ordered = sorted(requests, key=lambda r: r.key)
        keys = [r.key for r in ordered]
        t0 = time.perf_counter()
        out = train_run(
            spec,
            self.prepared(spec.data),
            ordered,
            resume_state=self.store.load_checkpoint(spec, keys),
            checkpoint=lambda state: self.store.save_checkpoint(spec, state, keys),
            checkpoint_every_s=self.cfg.checkpoint_every_s,
            progress=self.cfg.progress,
        )
        return self._put(spec, out, ordered, time.perf_counter() - t0)

    def _put(self, spec: RunSpec, out, ordered: list[RecorderRequest], wall: float) -> StoredRun:
        extra = {"wall_seconds": wall,
                 "requests": {r.key: {"name": r.name, "params": list(r.params)} for r in ordered}}
        return self.store.put(spec, out, str(self.device), extra)

    def _pending(self) -> tuple[dict[RunSpec, StoredRun], list[tuple[RunSpec, set[RecorderRequest]]]]:
        """Stored runs that already carry every wanted recorder, and what is left to train."""
        done, pending = {}, []
        order = sorted(self.plan.runs.items(), key=lambda kv: (str(kv[0].data), kv[0].seed, kv[0].digest()))
        for spec, wanted in order:
            stored = self.store.get(spec)
            if stored is not None and {r.key for r in wanted} <= stored.recorders:
                done[spec] = stored
                continue
            requests = set(wanted)
            if stored is not None:  # keep what it recorded before; deterministic seeds retrace the run
                requests |= {RecorderRequest(v["name"], tuple(map(tuple, v["params"])))
                             for v in stored.manifest.get("requests", {}).values()}
            pending.append((spec, requests))
        return done, pending

    def _ensemble_groups(self, pending):
        """Runs that differ only in training subset and seed, train together as one batched
        ensemble when `baselines.ensemble` says the model, recorders and device allow it."""
        try:
            from baselines.ensemble import can_ensemble
        except ImportError:
            return [], pending
        groups: dict[tuple, list] = defaultdict(list)
        singles = []
        for spec, requests in pending:
            if can_ensemble(spec, requests, self.device):
                groups[(spec.data, spec.model, spec.recipe, frozenset(requests))].append(spec)
            else:
                singles.append((spec, requests))
        batched = []
        for (_, _, _, requests), specs in groups.items():
            if len(specs) == 1:
                singles.append((specs[0], set(requests)))
            else:
                batched.append((specs, set(requests)))
        return batched, singles

    def execute(self) -> tuple[dict[RunSpec, StoredRun], dict[RunSpec, str], list[str], list[str]]:
        runs, pending = self._pending()
        reused = [spec.label() for spec in runs]
        failed: dict[RunSpec, str] = {}
        trained: list[str] = []
        batched, singles = self._ensemble_groups(pending)
        for specs, requests in batched:
            from baselines.ensemble import train_ensemble

            ordered = sorted(requests, key=lambda r: r.key)
            t0 = time.perf_counter()
            try:
                outs = train_ensemble(specs, self.prepared(specs[0].data), ordered, progress=self.cfg.progress)
            except RunFailed:  # one member diverged: train them one by one so only that one fails
                singles.extend((spec, set(requests)) for spec in specs)
                continue
            wall = (time.perf_counter() - t0) / len(specs)
            for spec, out in zip(specs, outs):
                runs[spec] = self._put(spec, out, ordered, wall)
                trained.append(spec.label())

        def guarded(item: tuple[RunSpec, set[RecorderRequest]]):
            try:
                return item[0], self._train_and_store(*item), ""
            except RunFailed as e:
                return item[0], None, str(e)

        for spec, run, error in self.executor.map(guarded, singles, desc="runs"):
            if run is None:
                failed[spec] = error
                print(f"error: {error}", file=sys.stderr)
            else:
                runs[spec] = run
                trained.append(spec.label())
        return runs, failed, trained, reused

    # scoring and evaluation -------------------------------------------------------------
    def run(self) -> ExperimentResult:
        runs, failed, trained, reused = self.execute()
        rows: list[dict] = []
        failures = list(failed.values())
        scores_by_data: dict[tuple[DataSpec, int], dict[str, np.ndarray]] = {}
        for task, setting, base in self.plan.settings:
            data = self.prepared(setting.data)
            key = (setting.data, setting.seed)
            if key not in scores_by_data:
                scores_by_data[key] = self._score(base, data, runs, failures)
            ctx = EvalContext(setting, base, data, runs, self.cfg, self.proxies)
            if any(n.spec not in runs for n in task.needs(setting, base, self.cfg)):
                failures.append(f"task {task.name} [{setting.label} seed {setting.seed}] skipped: a needed run failed")
                continue
            for row in task.evaluate(ctx, scores_by_data[key]):
                rows.append({"task": task.name, "dataset": self.cfg.dataset, "model": self.cfg.model,
                             "setting": setting.label, "seed": setting.seed, **row})
        raw = pd.DataFrame(rows, columns=["task", "dataset", "model", "setting", "proxy", "metric", "seed", "value"])
        board = aggregate(raw)
        result = ExperimentResult(raw, board, failures, trained, reused)
        result.base_train_acc = [runs[b].manifest["train_acc"] for _, _, b in self.plan.settings if b in runs]
        self._write(result, scores_by_data, runs)
        return result

    def _score(self, base: RunSpec, data: PreparedData, runs, failures: list[str]) -> dict[str, np.ndarray]:
        ctx = ScoreContext(base=base, labels=data.labels, num_classes=data.num_classes, runs=runs)
        scores = {}
        for proxy in self.proxies:
            if any(n.spec not in runs for n in proxy.needs(base)):
                failures.append(f"proxy {proxy.label} skipped for {base.label()}: a run it needs failed")
                continue
            s = np.asarray(proxy.score(ctx), dtype=np.float64)
            if s.shape != (data.n,):
                raise RuntimeError(f"proxy {proxy.label} returned shape {s.shape}, expected ({data.n},)")
            scores[proxy.label] = s
        return scores

    # outputs ----------------------------------------------------------------------------
    def _write(self, result: ExperimentResult, scores_by_data, runs: dict[RunSpec, StoredRun]) -> None:
        out = self.cfg.out
        for (data_spec, seed), scores in scores_by_data.items():
            data = self.prepared(data_spec)
            frame = pd.DataFrame({"index": np.arange(data.n), "label": data.labels, "clean_label": data.y_clean,
                                  "positive": data.positives, **scores})
            name = f"scores/{data_spec.corruption.label().replace('/', '_')}_seed{seed}.csv"
            atomic_write(out / name, lambda p, f=frame: f.to_csv(p, index=False))
            result.outputs.setdefault("scores", []).append(name)  # type: ignore[union-attr]
        atomic_write(out / "raw.csv", lambda p: result.raw.to_csv(p, index=False))
        atomic_write(out / "leaderboard.csv", lambda p: result.leaderboard.to_csv(p, index=False))
        md = markdown(result.leaderboard)
        atomic_write_text(out / "leaderboard.md", md)
        figures = out / "figures" / "index.json"
        if figures.exists():
            result.outputs["figures"] = json.loads(figures.read_text())
        summary = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.cfg).items()
                       if k not in ("recipe",)} | {"recipe": vars(self.cfg.recipe)},
            "device": str(self.device),
            "runs": [{"label": r.manifest["label"], "hash": r.manifest["spec_hash"],
                      "train_acc": r.manifest["train_acc"], "test_acc": r.manifest["test_acc"],
                      "train_seconds": r.manifest["train_seconds"]} for r in runs.values()],
            "trained": result.trained,
            "reused": result.reused,
            "failures": result.failures,
            "outputs": {"leaderboard": "leaderboard.csv", "raw": "raw.csv", "markdown": "leaderboard.md",
                        **result.outputs},
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))


def run_experiment(cfg: ExperimentConfig) -> ExperimentResult:
    return Experiment(cfg).run()
