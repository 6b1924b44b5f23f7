"""Evaluation: every proxy's scores on each setting's data, every task's rows from those scores, and
the leaderboard (with its bootstrap) over them, gathered into the experiment's result.

Scoring and evaluation run numpy's BLAS on one thread (`single_blas_thread`). A proxy that needs a
failed run, or whose scores are all NaN, is left out and reported; so is a task setting that needs
a failed run. The result holds what the outputs are written from.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import ExperimentConfig
from harness.errors import HarnessError, StorageError
from harness.io import failure_reason
from harness.leaderboard import aggregate
from harness.phases import PhaseTimer
from harness.planner import Plan
from harness.prepared import PreparedData
from harness.provenance import proxy_provenance
from harness.recorders import EVAL_LAST
from harness.runner import RunnerResult
from harness.runspec import DataSpec, RunSpec
from harness.store import StoredRun
from harness.tasks import EvalContext
from harness.tasks.suspects import sample_column
from proxies import Proxy, ScoreContext
from proxies.base import _check_pandas_order, checked_scores, read_only_hint

RAW_COLUMNS = ["task", "dataset", "model", "setting", "proxy", "metric", "seed", "value"]


@dataclass
class ExperimentResult:
    raw: pd.DataFrame
    leaderboard: pd.DataFrame
    failures: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    resumed: dict[str, int] = field(default_factory=dict)  # trained label -> the epoch a checkpoint resumed it at
    outputs: dict[str, list[str]] = field(default_factory=dict)  # kind -> the files written
    base_train_acc: list[float] = field(default_factory=list)  # eval-mode, on the labels trained on
    base_test_acc: list[float] = field(default_factory=list)  # on the test split; NaN: none
    reference_train_acc: list[float] = field(default_factory=list)  # the stability models', on their subsets
    flipped_fit: dict[str, float] = field(default_factory=dict)  # noisy base run's hash -> share fitted
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # "noise=0.1_seed0" -> scores/<key>.csv
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # tasks' own: "suspects/suspects.csv" -> it
    proxies: list[dict[str, Any]] = field(default_factory=list)  # each proxy's params and code (`harness.provenance`)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # PHASES -> wall seconds (summary.json)
    machines: list[dict[str, Any]] = field(default_factory=list)  # each run's `Manifest.machine` ({}: unknown)


def _failed_check(error: BaseException) -> bool:
    """Whether `error` is the scores' shape/dtype check failing (`checked_scores`, numpy's reading of
    them in it), said in its one line with no traceback; raised deeper, in the proxy's own code (its
    returned object's `__array__`, a lazy value read there), it keeps the traceback that finds the bug."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code in (checked_scores.__code__, _check_pandas_order.__code__)


def score(proxies: list[Proxy], base: RunSpec, data: PreparedData, runs: Mapping[RunSpec, StoredRun]
          ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every proxy's scores on the base run's data (proxy label -> one score per sample), and a line
    for each proxy left out (a run it needs failed, or all its scores are NaN)."""
    ctx = ScoreContext(base=base, labels=data.labels, num_classes=data.num_classes, runs=runs)
    scores, problems = {}, []
    for proxy in proxies:
        if any(n.spec not in runs for n in proxy.needs(base)):
            problems.append(f"proxy {proxy.label} skipped for {base.label()}: a run it needs failed")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are reported below
                s = checked_scores(proxy.score(ctx), data.n)
        except StorageError:  # the store failed (an entry pruned mid-run, a disk): not the proxy's fault
            raise
        except Exception as e:  # a bug in one proxy (a plugin's, say) costs that proxy, not the experiment
            # the harness's own checks (ssft's halves, CL's folds) say what is wrong in the message; they
            # were re-raised, which ended a trained experiment with exit 2 ("bad input, nothing trained")
            if not isinstance(e, HarnessError) and not _failed_check(e):
                traceback.print_exc()
            problems.append(f"proxy {proxy.label} failed for {base.label()}: {type(e).__name__}: "
                            f"{failure_reason(e)}{read_only_hint(e)}; left out of the leaderboard")
            continue
        if np.isnan(s).all():
            problems.append(f"proxy {proxy.label} failed for {base.label()}: every score is NaN "
                            "(check its parameters); left out of the leaderboard")
            continue
        unscored = int((~np.isfinite(s)).sum())
        if unscored:  # how detection metrics rank them (`harness.metrics._dense_ranks`), correlations go NaN: say so
            ranks = ", ".join(f"{what} {rank}" for what, rank, count in (
                ("NaN", "below every score", np.isnan(s).sum()),
                ("-inf", "below every finite score", np.isneginf(s).sum()),
                ("+inf", "above every finite score", np.isposinf(s).sum())) if count)
            warnings.warn(f"proxy {proxy.label} gives {unscored} of {len(s)} samples no finite score for "
                          f"{base.label()}: detection metrics rank them as its value says ({ranks}) and its "
                          "correlations with a reference are NaN; a proxy should score every sample", stacklevel=2)
        seen = s[~np.isnan(s)]
        if len(seen) == len(s) and len(s) > 1 and (seen == seen[0]).all():
            warnings.warn(f"proxy {proxy.label} gives every sample the same score ({seen[0]:g}) for {base.label()}: "
                          "it ranks nothing (detection AUROC 0.5, correlations undefined); with few epochs some "
                          "proxies cannot separate samples (e.g. learning_time's rule=first)", stacklevel=2)
        scores[proxy.label] = s
    return scores, problems


#: Where a metric's whole 95 % interval lies below this, the proxy ranks the wrong way round:
#: detection (AUROC) below chance, a rank correlation with the reference or vulnerability negative.
CHANCE = {"auroc": 0.5, "spearman": 0.0}


def reversed_rankings(board: pd.DataFrame) -> list[str]:
    """A line for each proxy that some result ranks the wrong way round (its interval wholly below
    chance). memprox reads a higher score as more memorized or suspicious; a proxy scoring the other
    way (a margin, a confidence) got AUROC 0.03 and a negative correlation in the leaderboard, read
    as "worse than chance" rather than "negate it", without a word."""
    rows = board[board["metric"].isin(list(CHANCE)) & (board["proxy"] != "reference") & board["ci_high"].notna()]
    rows = rows[rows["ci_high"].astype(float) < rows["metric"].map(CHANCE).astype(float)]  # empty: no str dtype
    lines = []
    for proxy, found in rows.groupby("proxy", sort=False):
        where = "; ".join(f"{r.task} {r.setting} {r.metric} {r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                          for r in found.head(3).itertuples())
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        lines.append(f"proxy {proxy} ranks the wrong way round, its 95% interval wholly below chance ({where}{more}): "
                     "memprox reads a higher score as more memorized or more suspicious. A proxy of yours whose lower "
                     "score means more returns its negation; a built-in ranks so only where its signal does not "
                     "apply (docs/proxies.md: variability where the network never fits the flipped labels)")
    return lines


def flipped_fit(plan: Plan, runs: Mapping[RunSpec, StoredRun], prepared: Callable[[DataSpec], PreparedData]
                ) -> dict[str, float]:
    """For each base run trained on flipped labels (noise or a label file): the share of the flipped
    samples whose given label it predicts at the end (eval mode), read from its last-epoch eval pass
    where one was recorded. Near 1 is the memorization regime the paper's mislabeled tables assume;
    near 0 the network ignores the flipped labels and the last epoch's loss alone finds them."""
    out = {}
    for base in dict.fromkeys(b for _, _, b in plan.settings):  # a base shared by tasks is read once
        run = runs.get(base)
        flipped = base.data.corruption.kind in ("noise", "label_file")
        if run is None or not flipped or EVAL_LAST.key not in run.recorders:
            continue
        positives = prepared(base.data).positives
        if positives.any():
            correct = np.asarray(run.arrays(EVAL_LAST.key)["correct"]).reshape(-1)
            out[run.manifest.spec_hash] = float(correct[positives].astype(np.float64).mean())
    return out


def reference_train_acc(plan: Plan, runs: Mapping[RunSpec, StoredRun]) -> list[float]:
    """Each stability model's final training accuracy on its subset, once per model: a reference
    from models that never fitted their training samples (too few epochs, a model too small) is
    no memorization estimate, and its numbers would otherwise be scored without a word."""
    specs = dict.fromkeys(spec for task, _, base in plan.settings if task.reference is not None
                          for spec in task.reference.specs(base))
    return [runs[s].manifest.train_acc for s in specs if s in runs]


def evaluate(cfg: ExperimentConfig, plan: Plan, proxies: list[Proxy], ran: RunnerResult,
             prepared: Callable[[DataSpec], PreparedData], timer: PhaseTimer, out: Path | None
             ) -> tuple[ExperimentResult, dict[str, list[str]]]:
    """Score each setting's data once, evaluate every task setting on it and aggregate the
    leaderboard. Returns the result and the files tasks wrote into `out` (artifacts: kind ->
    relative paths; `out` None: tasks write no files, and keep their tables in the result alone)."""
    runs, rows = ran.runs, []
    failures = list(ran.failed.values())
    scores_by_data: dict[tuple[DataSpec, int], dict[str, np.ndarray]] = {}
    artifacts: dict[str, list[str]] = {}
    tables: dict[str, pd.DataFrame] = {}
    config = replace(cfg, out=out)  # nothing reads config.out for its files: ctx.out is the place
    for task, setting, base in plan.settings:
        data = prepared(setting.data)
        key = (setting.data, setting.seed)
        if key not in scores_by_data:
            with timer("score"):
                scores_by_data[key], problems = score(proxies, base, data, runs)
            failures += problems
        ctx = EvalContext(setting, base, data, runs, config, proxies, out=out, artifacts=artifacts, tables=tables)
        if any(n.spec not in runs for n in task.needs(setting, base, cfg)):
            failures.append(f"task {task.name} [{setting.label} seed {setting.seed}] skipped: a needed run failed")
            continue
        with timer("evaluate"):
            for row in task.evaluate(ctx, scores_by_data[key]):
                rows.append({"task": task.name, "dataset": cfg.dataset, "model": cfg.model,
                             "setting": setting.label, "seed": setting.seed, **row})
    with timer("evaluate"):
        full = pd.DataFrame(rows)
        raw = pd.DataFrame(rows, columns=RAW_COLUMNS)  # written without the bootstrap arrays ("boot")
        board = aggregate(full if "boot" in full.columns else raw)
        for line in reversed_rankings(board):
            warnings.warn(line, stacklevel=2)
    with timer("write"):
        result = ExperimentResult(raw, board, failures, ran.trained, ran.reused, dict(ran.resumed), tables=tables,
                                  proxies=proxy_provenance(proxies))
        bases = dict.fromkeys(b for _, _, b in plan.settings if b in runs)  # tasks share base runs: each once
        result.base_train_acc = [runs[b].manifest.train_acc for b in bases]
        result.base_test_acc = [runs[b].manifest.test_acc for b in bases]
        result.machines = [r.manifest.machine for r in runs.values()]
        result.reference_train_acc = reference_train_acc(plan, runs)
        result.flipped_fit = flipped_fit(plan, runs, prepared)
        for (data_spec, seed), scores in scores_by_data.items():
            data = prepared(data_spec)
            name = f"{data_spec.corruption.label().replace('/', '_')}_seed{seed}"
            files, named = data.dataset.sample_names, sample_column(data.dataset)
            result.scores[name] = pd.DataFrame({"index": np.arange(data.n),
                                                **({named: list(files)} if files is not None else {}),
                                                "label": data.labels, "clean_label": data.y_clean,
                                                "positive": data.positives, **scores})
    return result, artifacts
