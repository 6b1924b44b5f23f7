"""An experiment end to end, as a thin orchestrator: plan the runs every proxy and task needs, turn
the runs not yet stored into self-contained jobs, hand them to an executor, put each result in the
store as it arrives, then score, evaluate and write the outputs.

Everything that can be wrong with the input (and an unwritable store or output folder) is checked
before the first run trains, so bad input costs nothing and leaves no partial output. A run that
fails (non-finite loss, a worker that died twice) is reported and the rest still finishes. Store
entries are claimed with per-entry locks, so experiments sharing a store train each spec once.
Outputs are written to a temporary folder beside `--out` and swapped in at the end with rollback, so
an interrupted experiment never leaves half an output folder, and a folder never mixes two
experiments. The folder's own record (`.memprox-outputs.json`: each file with its checksum) says
what memprox wrote there: only those files, unchanged since, are ever replaced or removed, so a
user's files, a repository or the store beside them are never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.config import ExperimentConfig
from harness.datasets import Dataset
from harness.ensemble import can_ensemble, ensemble_chunks
from harness.errors import HarnessError, Interrupted, StorageError
from harness.executors import Executor, make_executor
from harness.io import (
    JOURNAL,
    MIN_FREE_BYTES,
    atomic_write,
    atomic_write_text,
    blocked_by,
    exclusive,
    file_sha256,
    is_plain_relpath,
    pid_alive,
    plain_file,
    recover_swap,
    regular_files,
    swap_files,
)
from harness.jobs import DataSource, Job, JobResult, load_source, prepared_data
from harness.leaderboard import aggregate, markdown
from harness.models import MODELS
from harness.prepared import PreparedData
from harness.recorders import RecorderRequest
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore, StoredRun
from harness.subsets import subset_indices
from harness.tasks import EvalContext, Setting, Task, make_tasks
from proxies import Proxy, ScoreContext, resolve_proxies

#: Config fields that say how or where an experiment runs, not what it computes: two configs that
#: differ only in these are the same experiment (and may write to the same --out).
RUNTIME_FIELDS = ("out", "store", "progress", "executor", "workers", "ray_address", "gpus_per_run", "overwrite",
                  "checkpoint_every_s")
#: The output folder's own record of what memprox wrote into it: {"experiment": id, "publish": nonce,
#: "files": {relative path: SHA-256}}. Only files listed there, and unchanged since, are ever removed.
RECORD = ".memprox-outputs.json"
#: Written into a staging folder when it is made: proof that a stale one is memprox's to remove.
STAGING_MARKER = ".memprox-staging"
_SHA256 = re.compile(r"[0-9a-f]{64}")
RAW_COLUMNS = ["task", "dataset", "model", "setting", "proxy", "metric", "seed", "value"]
#: The stages of a run, timed into summary.json's ``phase_seconds``: plan (checks, planning, the
#: corrupted data every run needs), load (the dataset, the store's cleanup and lookups), train
#: (training what the store lacks and storing it), score (every proxy's scores), evaluate (the
#: tasks, their figures included, and the leaderboard with its bootstrap), write (the output files).
PHASES = ("plan", "load", "train", "score", "evaluate", "write")


class PhaseTimer:
    """Wall seconds per phase (`PHASES`), summed over every stretch spent in it; `rounded` counts
    a stretch still open up to now (the summary is written from inside the write phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._open: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += max(0.0, seconds)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if phase in self._open:  # nested in the same phase: the outer stretch counts it
            yield
            return
        self._open[phase] = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - self._open.pop(phase))

    def rounded(self) -> dict[str, float]:
        now = time.perf_counter()
        return {k: round(v + (now - self._open[k] if k in self._open else 0.0), 3) for k, v in self.seconds.items()}


def single_blas_thread() -> AbstractContextManager[object]:
    """Scoring and evaluation run numpy's BLAS on one thread. Their matrices are small (B x N
    bootstrap weights), so a second thread gains little, while on a machine whose CPUs are busy a
    multi-threaded BLAS call waits for its parked threads: the bootstrap ran 2-3x slower with two
    threads than with one on two loaded cores. Results are the same bits either way (checked on
    the default run's outputs and in tests/test_phases.py), and no longer depend on how many
    cores the machine has."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it the default threads are kept
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def format_phases(phases: dict[str, float]) -> str:
    """One line: `phases: plan 0.1 s · load 0.8 s · train 120.3 s · ...`."""
    return "phases: " + " · ".join(f"{k} {v:.1f} s" for k, v in phases.items())


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


def default_store() -> Path:
    return Path(os.environ.get("MEMPROX_CACHE", Path.home() / ".cache" / "memprox")) / "store"


def experiment_id(cfg: ExperimentConfig) -> str:
    """Hash of what the experiment computes (not where or how it runs): the ownership mark of --out."""
    what = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_FIELDS}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record(out: Path) -> tuple[str | None, dict[str, str]]:
    """The folder's record of its outputs: (experiment id, relative path -> SHA-256). A record that is
    missing, or malformed in any entry, counts as none: then no file there is known to be ours."""
    path = plain_file(out, RECORD)
    try:
        data = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None, {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not isinstance(data.get("experiment"), str):
        return None, {}
    if not all(is_plain_relpath(rel) and isinstance(sha, str) and _SHA256.fullmatch(sha) for rel, sha in files.items()):
        return None, {}
    return data["experiment"], files


def _owner(out: Path) -> str | None:
    """The experiment whose outputs `out` holds, by the folder's record (None: unknown)."""
    return _record(out)[0]


def _ours(out: Path) -> tuple[str | None, dict[str, str], list[str]]:
    """(owner, recorded files still exactly as memprox wrote them, recorded files changed since).
    A changed file is the user's now: it is never removed, and replaced only with --overwrite."""
    owner, files = _record(out)
    ours, changed = {}, []
    for rel, sha in files.items():
        path = plain_file(out, rel)
        try:
            same = path is not None and file_sha256(path) == sha
        except OSError:  # unreadable: not provably ours
            same = False
        if same:
            ours[rel] = sha
        elif os.path.lexists(out / rel):
            changed.append(rel)
    return owner, ours, changed


def _out_lock(out: Path) -> AbstractContextManager[None]:
    """Serialises publishing into `out` between processes. Its file lives beside `out`, like the
    staging folders, because `out` may not exist yet; it is removed on release."""
    return exclusive(out.parent / f".{out.name}.memprox-lock")


def check_out(out: Path, identity: str, overwrite: bool, store: Path) -> None:
    """Before training: --out must be a writable folder apart from the run store, holding no other
    experiment's results, no files memprox cannot show it wrote, and none changed since it wrote
    them, unless --overwrite (which replaces only files a new output has the name of)."""
    out, store = Path(out).resolve(), Path(store).resolve()
    if out == store or store in out.parents or out in store.parents:
        where = "is" if out == store else "is inside" if store in out.parents else "contains"
        raise HarnessError(f"--out {out} {where} the run store {store}; pass an --out outside the store that does "
                           "not contain it")
    if out == out.parent:
        raise HarnessError(f"--out {out} is the file system root; pass a folder")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file, not a folder; pass a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for folder in (out.parent, out) if out.exists() else (out.parent,):
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise HarnessError(f"output folder {out} is not writable ({e.strerror}); pass a writable --out") from e
    free = shutil.disk_usage(out.parent).free
    if free < MIN_FREE_BYTES:
        raise HarnessError(f"output folder {out} has only {free / 2**20:.0f} MiB free; free some space or pass "
                           "another --out")
    if _stale(out):
        with _out_lock(out):
            _clean_stale_staging(out)
    if overwrite or not out.exists():
        return
    try:
        owner, _, changed = _ours(out)
        empty = not any(out.iterdir())
    except OSError as e:
        raise HarnessError(f"--out {out} cannot be read ({e.strerror}); pass a readable --out") from e
    if owner != identity and not empty:
        raise HarnessError(f"--out {out} holds results of another experiment (or files memprox cannot show it "
                           "wrote); pass another --out, or --overwrite to replace the outputs there (other files "
                           "are kept)")
    if changed:
        raise HarnessError(f"--out {out}: {changed[0]} was changed after memprox wrote it; move it away, or pass "
                           "--overwrite to replace it")


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
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # "noise=0.1_seed0" -> scores/<key>.csv
    phase_seconds: dict[str, float] = field(default_factory=dict)  # PHASES -> wall seconds (summary.json)


class Experiment:
    def __init__(self, cfg: ExperimentConfig, executor: Executor | None = None) -> None:
        self.timer = PhaseTimer()
        t0 = time.perf_counter()
        self.cfg = cfg
        cfg.validate()
        if cfg.model not in MODELS:
            raise HarnessError(f"unknown model {cfg.model!r}; valid models: {', '.join(sorted(MODELS))}")
        self.proxies: list[Proxy] = resolve_proxies(cfg.proxies, cfg.proxy_args)
        self.tasks = make_tasks(cfg.tasks, cfg.task_args, cfg.reference)
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.executor = executor or make_executor(cfg)
        self.identity = experiment_id(cfg)
        if cfg.out is not None:
            check_out(Path(cfg.out), self.identity, cfg.overwrite, Path(cfg.store or default_store()))
        self.store = RunStore(cfg.store or default_store())
        self.store.check_writable()
        self.source = DataSource(cfg.dataset, str(cfg.data_root) if cfg.data_root else None, cfg.subset)
        t1 = time.perf_counter()
        self.dataset: Dataset = load_source(self.source, download=cfg.download)
        t2 = time.perf_counter()
        self.plan = self._plan()
        cfg.validate_for_data(self.dataset, {spec.model for spec in self.plan.runs}, len(self.proxies))
        self.timer.add("load", t2 - t1)
        self.timer.add("plan", time.perf_counter() - t0 - (t2 - t1))

    # planning ---------------------------------------------------------------------------
    def base_spec(self, setting: Setting) -> RunSpec:
        return RunSpec(data=setting.data, model=self.cfg.model, recipe=self.cfg.recipe, seed=setting.seed)

    def _plan(self) -> Plan:
        self._check_classes()
        base_data = DataSpec(dataset=self.cfg.dataset, subset=self.cfg.subset, dataset_sha=self.dataset.fingerprint)
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

    def _check_classes(self) -> None:
        """Every class needs two training samples: stratified folds and halves, and a label to flip
        to, are undefined below that, and a leaderboard of one-sample classes says nothing."""
        counts = np.bincount(self.dataset.y_train.numpy(), minlength=self.dataset.num_classes)
        thin = [str(c) for c, k in enumerate(counts) if k < 2]
        if thin:
            where = f"--subset {self.cfg.subset}" if self.cfg.subset else f"dataset {self.cfg.dataset}"
            raise HarnessError(f"{where} leaves class(es) {', '.join(thin)} with fewer than 2 training samples; "
                               "use a larger --subset (or drop those classes from the data)")

    def prepared(self, spec: DataSpec) -> PreparedData:
        return prepared_data(self.source, spec, self.device)

    def pending(self) -> tuple[dict[RunSpec, StoredRun], list[tuple[RunSpec, set[RecorderRequest]]]]:
        """Stored runs that already carry every wanted recorder, and what is left to train (with
        the recorders a stored entry has, so an upgraded entry keeps them)."""
        with self.timer("load"):
            return self._pending()

    def _pending(self) -> tuple[dict[RunSpec, StoredRun], list[tuple[RunSpec, set[RecorderRequest]]]]:
        done, todo = {}, []
        order = sorted(self.plan.runs.items(), key=lambda kv: (str(kv[0].data), kv[0].seed, kv[0].digest()))
        for spec, wanted in order:
            stored = self.store.get(spec)
            if stored is not None and {r.key for r in wanted} <= stored.recorders:
                done[spec] = stored
                continue
            requests = set(wanted)
            if stored is not None:  # deterministic seeds retrace the run: keep what it recorded before
                requests |= {RecorderRequest(r.name, tuple(map(tuple, r.params)))
                             for r in stored.manifest.recorders.values() if r.name}
            todo.append((spec, requests))
        return done, todo

    def jobs(self, pending: list[tuple[RunSpec, set[RecorderRequest]]]) -> list[Job]:
        """Self-contained jobs for the pending runs. A spec that can be an ensemble member trains in
        the ensemble engine, always (even alone), so how a spec is trained depends only on the spec
        and the device type; members sharing data, model, recipe and recorders train together, in
        chunks of `harness.ensemble.ensemble_chunks`."""
        groups: dict[tuple, list[RunSpec]] = defaultdict(list)
        singles: list[tuple[RunSpec, set[RecorderRequest]]] = []
        for spec, requests in pending:
            if can_ensemble(spec, requests, self.device):
                groups[(spec.data, spec.model, spec.recipe, frozenset(requests))].append(spec)
            else:
                singles.append((spec, requests))
        jobs = []
        for (data, _, _, requests), specs in groups.items():
            for chunk in ensemble_chunks(specs, self.prepared(data), gpu_fraction=self.cfg.gpus_per_run or 1.0):
                jobs.append(self._job(tuple(specs[i] for i in chunk), requests, "ensemble"))
        jobs += [self._job((spec, ), requests, "single") for spec, requests in singles]
        return jobs

    def _job(self, specs: tuple[RunSpec, ...], requests, engine: str) -> Job:
        """A job as the executor places it: it says how jobs see the device, threads and the store."""
        cfg = self.cfg
        placed = self.executor.placement(cfg, self.device)
        return Job(
            specs=specs, requests=tuple(sorted(requests, key=lambda r: r.key)), engine=engine, source=self.source,
            device=placed.device, threads=placed.threads, compile=cfg.compile,
            checkpoint_root=str(self.store.root) if self.executor.shares_store else None,
            checkpoint_every_s=cfg.checkpoint_every_s, progress=placed.progress,
            num_cpus=placed.num_cpus, num_gpus=placed.num_gpus,
        )

    # execution --------------------------------------------------------------------------
    def execute(self) -> tuple[dict[RunSpec, StoredRun], dict[RunSpec, str], list[str], list[str]]:
        """Train what the store lacks and store it: (runs, failed, trained labels, reused labels).

        Each pending spec is claimed with its entry's lock, without waiting; a spec another process
        holds is left to it, and once that process lets go it is read back (or, if it failed there,
        claimed again). No lock is ever awaited while others are held, so processes cannot deadlock.
        Raises Interrupted on Ctrl-C and StorageError when a store write fails; either way every
        run already stored stays, no lock is left held and the executor's workers are stopped."""
        runs, todo = self.pending()
        reused = [spec.label() for spec in runs]
        failed: dict[RunSpec, str] = {}
        trained: list[str] = []
        try:
            while todo:
                waiting = self._train_claimed(todo, runs, failed, trained, reused)
                todo = []
                for spec, requests in waiting:
                    with self.store.lock(spec):  # wait for the other process to let go
                        if not self._reuse(spec, runs, reused):
                            todo.append((spec, requests))
        except KeyboardInterrupt:
            raise Interrupted(len(runs)) from None
        finally:
            self.executor.close()  # training is over: the workers' memory goes back before evaluation
        return runs, failed, trained, reused

    def _reuse(self, spec: RunSpec, runs, reused) -> bool:
        stored = self.store.get(spec)
        if stored is not None and {r.key for r in self.plan.runs[spec]} <= stored.recorders:
            runs[spec] = stored
            reused.append(spec.label())
            return True
        return False

    def _train_claimed(self, pending, runs, failed, trained, reused) -> list[tuple[RunSpec, set[RecorderRequest]]]:
        """Claim (lock), train and store `pending`; returns the specs another process holds."""
        waiting = []
        with ExitStack() as held:
            claimed = []
            for spec, requests in pending:
                lock = self.store.lock(spec)
                try:
                    lock.acquire(timeout=0)
                except TimeoutError:
                    waiting.append((spec, requests))
                    continue
                held.callback(lock.release)
                if not self._reuse(spec, runs, reused):  # it may have been stored since we looked
                    claimed.append((spec, requests))
            outcomes = self.executor.run(self.jobs(claimed))
            try:
                for job, outcome in outcomes:
                    self._store_outcome(job, outcome, runs, failed, trained)
            finally:
                close = getattr(outcomes, "close", None)
                if close is not None:
                    close()  # cancels outstanding jobs when we leave early
        return waiting

    def _store_outcome(self, job: Job, outcome: JobResult | BaseException, runs, failed, trained) -> None:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            outcome = JobResult(failures={spec: str(outcome) or type(outcome).__name__ for spec in job.specs})
        for spec, message in outcome.failures.items():
            failed[spec] = message
            print(f"error: {message}", file=sys.stderr)
        for spec, (arrays, manifest) in outcome.outputs.items():
            runs[spec] = self.store.put(spec, arrays, manifest)
            trained.append(spec.label())

    # scoring and evaluation -------------------------------------------------------------
    def run(self) -> ExperimentResult:
        with self.timer("load"):
            self.store.clean()
        loading = self.timer.seconds["load"]
        t0 = time.perf_counter()
        runs, failed, trained, reused = self.execute()
        # execute's store lookups (`pending`) count as load; the rest is training and storing
        self.timer.add("train", time.perf_counter() - t0 - (self.timer.seconds["load"] - loading))
        try:
            with _staging(self.cfg.out) as staging, single_blas_thread():
                result = self._evaluate(runs, failed, trained, reused, staging)
        except KeyboardInterrupt:
            raise Interrupted(len(runs)) from None
        result.phase_seconds = self.timer.rounded()
        return result

    def _evaluate(self, runs, failed, trained, reused, staging: Path | None) -> ExperimentResult:
        rows: list[dict] = []
        failures = list(failed.values())
        scores_by_data: dict[tuple[DataSpec, int], dict[str, np.ndarray]] = {}
        artifacts: dict[str, list[str]] = {}
        config = replace(self.cfg, out=staging)  # nothing reads config.out for its files: ctx.out is the place
        timer = self.timer
        for task, setting, base in self.plan.settings:
            data = self.prepared(setting.data)
            key = (setting.data, setting.seed)
            if key not in scores_by_data:
                with timer("score"):
                    scores_by_data[key] = self._score(base, data, runs, failures)
            ctx = EvalContext(setting, base, data, runs, config, self.proxies, out=staging, artifacts=artifacts)
            if any(n.spec not in runs for n in task.needs(setting, base, self.cfg)):
                failures.append(f"task {task.name} [{setting.label} seed {setting.seed}] skipped: a needed run failed")
                continue
            with timer("evaluate"):
                for row in task.evaluate(ctx, scores_by_data[key]):
                    rows.append({"task": task.name, "dataset": self.cfg.dataset, "model": self.cfg.model,
                                 "setting": setting.label, "seed": setting.seed, **row})
        with timer("evaluate"):
            full = pd.DataFrame(rows)
            raw = pd.DataFrame(rows, columns=RAW_COLUMNS)  # written without the bootstrap arrays ("boot")
            board = aggregate(full if "boot" in full.columns else raw)
        with timer("write"):
            result = ExperimentResult(raw, board, failures, trained, reused)
            result.base_train_acc = [runs[b].manifest.train_acc for _, _, b in self.plan.settings if b in runs]
            for (data_spec, seed), scores in scores_by_data.items():
                data = self.prepared(data_spec)
                name = f"{data_spec.corruption.label().replace('/', '_')}_seed{seed}"
                result.scores[name] = pd.DataFrame({"index": np.arange(data.n), "label": data.labels,
                                                    "clean_label": data.y_clean, "positive": data.positives,
                                                    **scores})
            if staging is not None:
                self._write(result, runs, staging, artifacts)
        return result

    def _score(self, base: RunSpec, data: PreparedData, runs, failures: list[str]) -> dict[str, np.ndarray]:
        ctx = ScoreContext(base=base, labels=data.labels, num_classes=data.num_classes, runs=runs)
        scores = {}
        for proxy in self.proxies:
            if any(n.spec not in runs for n in proxy.needs(base)):
                failures.append(f"proxy {proxy.label} skipped for {base.label()}: a run it needs failed")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are reported below
                s = np.asarray(proxy.score(ctx), dtype=np.float64)
            if s.shape != (data.n,):
                raise RuntimeError(f"proxy {proxy.label} returned shape {s.shape}, expected ({data.n},)")
            if np.isnan(s).all():
                failures.append(f"proxy {proxy.label} failed for {base.label()}: every score is NaN "
                                "(check its parameters); left out of the leaderboard")
                continue
            scores[proxy.label] = s
        return scores

    # outputs ----------------------------------------------------------------------------
    def _write(self, result: ExperimentResult, runs: dict[RunSpec, StoredRun], tmp: Path,
               artifacts: dict[str, list[str]]) -> None:
        out = Path(self.cfg.out).resolve()
        try:
            for name, frame in result.scores.items():
                path = f"scores/{name}.csv"
                atomic_write(tmp / path, lambda p, f=frame: f.to_csv(p, index=False))
                result.outputs.setdefault("scores", []).append(path)  # type: ignore[union-attr]
            atomic_write(tmp / "raw.csv", lambda p: result.raw.to_csv(p, index=False))
            atomic_write(tmp / "leaderboard.csv", lambda p: result.leaderboard.to_csv(p, index=False))
            atomic_write_text(tmp / "leaderboard.md", markdown(result.leaderboard))
            result.outputs.update(artifacts)
            summary = self._summary(result, runs)  # its write phase ends here (summary and record follow)
            atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=1, default=str))
            _write_record(tmp, self.identity)
            _publish(tmp, out, self.identity, self.cfg.overwrite)
        except OSError as e:
            raise StorageError(f"cannot write outputs to {e.filename or out} ({e.strerror or e}); every run is kept "
                               "in the store, rerun once the folder is writable") from e

    def _summary(self, result: ExperimentResult, runs: dict[RunSpec, StoredRun]) -> dict:
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.cfg).items() if k != "recipe"}
        return {
            "experiment": self.identity,
            "config": cfg | {"recipe": vars(self.cfg.recipe)},
            "device": str(self.device),
            "runs": [{"label": r.manifest.label, "hash": r.manifest.spec_hash, "engine": r.manifest.engine,
                      "threads": r.manifest.threads, "train_acc": r.manifest.train_acc,
                      "test_acc": r.manifest.test_acc, "train_seconds": r.manifest.train_seconds}
                     for r in runs.values()],
            "trained": result.trained,
            "reused": result.reused,
            "failures": result.failures,
            "outputs": {"leaderboard": "leaderboard.csv", "raw": "raw.csv", "markdown": "leaderboard.md",
                        **result.outputs},
            "phase_seconds": self.timer.rounded(),  # write: up to this summary (it and the publish take ms)
        }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _staging(out: Path | None) -> Iterator[Path | None]:
    """A temporary folder beside --out, marked as memprox's when made, that the outputs are written
    to and published from (None without --out)."""
    if out is None:
        yield None
        return
    out = Path(out).resolve()
    try:
        tmp = _folder_beside(out, "tmp")
        (tmp / STAGING_MARKER).write_text("memprox staging folder of an experiment's outputs\n")
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as e:
        raise StorageError(f"cannot write outputs beside {out} ({e.strerror}); every run is kept in the store, "
                           "rerun once the folder is writable") from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _folder_beside(out: Path, kind: str) -> Path:
    """A new folder `.NAME.KIND-PID-RANDOM` beside `out` (same file system, so renames are atomic)."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{os.getpid()}-", dir=out.parent))


def _write_record(tmp: Path, identity: str) -> None:
    """Record every file written into `tmp` with its checksum. The nonce makes each publish's record
    unique, so after a kill part-way a committed swap can be told from one that was not."""
    files = {rel: file_sha256(tmp / rel) for rel in regular_files(tmp, skip=(STAGING_MARKER, RECORD))}
    hidden = [rel for rel in files if not is_plain_relpath(rel)]
    if hidden:  # a record naming them would not be trusted (it could name .git/...): a bug, not bad input
        raise RuntimeError(f"outputs with hidden names cannot be recorded: {', '.join(hidden)}")
    record = {"experiment": identity, "publish": os.urandom(8).hex(), "files": files}
    atomic_write_text(tmp / RECORD, json.dumps(record, indent=1))


def _publish(tmp: Path, out: Path, identity: str, overwrite: bool) -> None:
    """Move the complete outputs in `tmp` (with their record) into `out`, under the folder's lock.
    A folder that does not exist is the staging folder renamed. Into an existing one the new files
    are swapped in with rollback (`harness.io.swap_files`); set aside, and deleted once the new set
    is in, are only memprox's own earlier outputs (recorded, unchanged) and, with --overwrite, files
    a new output has the name of. Every other file and folder stays."""
    with _out_lock(out):
        _clean_stale_staging(out)
        if not os.path.lexists(out):
            (tmp / STAGING_MARKER).unlink()
            os.rename(tmp, out)
            return
        if out.is_symlink() or not out.is_dir():
            raise StorageError(f"--out {out} is no longer a folder; every run is kept in the store, rerun with a "
                               "folder as --out")
        owner, ours, _ = _ours(out)
        if owner != identity and not overwrite and any(out.iterdir()):
            raise StorageError(f"--out {out} got another experiment's results (or other files) while this one ran; "
                               "every run is kept in the store, rerun with another --out or --overwrite")
        _, incoming = _record(tmp)
        for rel in incoming:
            _check_place(out, rel, ours, overwrite)
        outgoing = [rel for rel in incoming if os.path.lexists(out / rel)]
        outgoing += [rel for rel in ours if rel not in incoming]
        swap_files(tmp, out, incoming, outgoing, _folder_beside(out, "old"), RECORD)


def _check_place(out: Path, rel: str, ours: dict[str, str], overwrite: bool) -> None:
    """A new output may take the place of memprox's own file, of any file with --overwrite, but
    never of a folder or a link on the way (those are never removed)."""
    target = out / rel
    blocker = blocked_by(out, rel)
    if blocker is None and target.is_dir() and not target.is_symlink():
        blocker = target
    if blocker is not None:
        raise StorageError(f"cannot write {rel} into --out {out}: {blocker} is in the way; move it away and rerun "
                           "(every run is kept in the store)")
    if os.path.lexists(target) and rel not in ours and not overwrite:
        raise StorageError(f"--out {out}: {rel} was not written by memprox (or was changed since); move it away, or "
                           "rerun with --overwrite to replace it (every run is kept in the store)")


def _stale(out: Path) -> list[tuple[str, Path]]:
    """Staging ("tmp") and set-aside ("old") folders beside `out` that killed processes left: the
    name pattern, a dead owner process, and the marker or journal written inside on creation."""
    prefix, found = f".{out.name}.", []
    if not out.parent.is_dir():
        return found
    for p in out.parent.iterdir():
        if not p.name.startswith(prefix) or p.is_symlink() or not p.is_dir():
            continue
        kind, _, rest = p.name[len(prefix):].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if plain_file(p, STAGING_MARKER if kind == "tmp" else JOURNAL) is not None:
            found.append((kind, p))
    return found


def _clean_stale_staging(out: Path) -> None:
    """Settle what killed experiments left beside --out (call under the folder's lock): a staging
    folder is removed, a swap of outputs is finished or rolled back (`harness.io.recover_swap`).
    A folder that merely has the name is never touched."""
    for kind, folder in _stale(out):
        if kind == "tmp":
            shutil.rmtree(folder, ignore_errors=True)
        else:
            recover_swap(folder, out)
