"""Suspects: the data as given, ranked, for a person to look at -- the task for real data that has
no ground truth to score against.

The other tasks inject label noise or duplicates so that a detector can be scored; a data-quality
engineer has one dataset and wants to know which of its samples to check first. This task trains
the clean base run per seed (no corruption; the runs the proxies need on it, shared with `cost`)
and, with an output folder, writes per seed:

- `suspects/suspects_seed<s>.csv`: every training sample, most suspicious first by the proxy
  `by`: rank, index, file (image folders, `npz:` files), the label given and the label the final model predicts
  (class ids, each with its class name: `label_name`, `predicted_name`), that model's probability
  of the given label, the suggested label (`suggested`, `suggested_name`: of the other classes,
  the one of the highest mean softmax over the training pass's epochs, `p_suggested` that mean;
  `harness.recorders.class_prob`), and every selected proxy's score (higher = more suspicious).
  Ties keep index order here; this is a reading order, not a metric.
- `figures/suspects_seed<s>.png` (image data): the top `k` by `by`, captioned
  `#index given->predicted (suggested?)`, the file (image folders) and the score.

With two or more seeds, `suspects/suspects.csv` ranks by the mean over seeds, which is steadier
than any one run: per sample the mean of every proxy's score and of `p_label`, `predicted_other`
(the share of the seeds' final models that predict another class than the given one) and `n_seeds`;
the suggested label is that of the seeds' mean softmax.

Rows, per proxy: `predicted_other_at_k`, the share of the proxy's top k that the final model
assigns to another class than the given one (expected value under random tie-breaking, as
precision at k). It is a description, not an accuracy: no one knows which labels are wrong, and a
sample the model predicts as its given class can still be mislabeled (the model fitted it).

Duplicates (found by harness.near_duplicates, written by harness.tasks.suspects_pairs; the same for every
seed, found once): `suspects/duplicates.csv`
lists the pairs of training samples that are copies or near copies of each other (a, b, their
distance: 1 - pixel correlation for images, Euclidean in standard deviations for a table's
features, 0 for exact copies; whether one is the other's mirror; labels with their class names,
files; pairs whose labels differ first), `figures/duplicates.png` draws the first k/2 pairs, and
every suspects CSV gains `duplicates` (the sample's partners, `;`-separated), `duplicate_files`
(where samples have a `file`: the partners' files, a JSON list in the same order) and
`duplicate_labels_differ` (a copy of the sample, or a partner of one, has another label:
`partner_columns`). With a test split, `suspects/train_test_duplicates.csv` lists the test samples
that copy a training sample (test, train, distance, mirrored, both labels with their class names
and files; by the same features and radius), `figures/train_test_duplicates.png` draws the first
k/2, and a warning says how many: test accuracy counts them as generalisation.

Parameters (`--task-arg suspects.NAME=VALUE`): `k` (40, at most 400: the grid's images and the
rows' k), `by` (the proxy to sort and draw by; default csl when selected, else the first
selected proxy), `duplicates` (near, the default; exact: byte-equal copies only, for data too big
for a search that grows as N^2 (185 s at 50,000 CIFAR-10 images searched once on one thread; 16
times that is refused before training, 8 times for images, which are searched twice; so is a search
whose estimated memory exceeds what is available to it (the machine's, or its cgroup's limit,
harness/search_memory.py), and checked again right before the search, the runs then stored); off),
`duplicate_threshold` (0.13, cleanlab Datalab's: a pair is near below this times the median
distance of a sample to its nearest neighbour) and `suggest` (on; off: no suggested label, and a
stored run without its record is reused as it is instead of training again to add it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

from harness.config import ExperimentConfig
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.metrics import precision_at_k
from harness.near_duplicates import MODES, NEIGHBOURS, THRESHOLD, searches_mirrors, searches_table, searches_values
from harness.near_duplicates_shifted import searches_shifts
from harness.recorders import RecorderRequest
from harness.recorders.class_prob import SUGGEST, SUGGESTED_COLUMNS, insert_suggested, mean_probs, suggested_columns
from harness.runspec import DataSpec, RunSpec
from harness.search_memory import available_bytes, refusal, search_peak_bytes
from harness.store import default_store
from harness.tasks.base import EvalContext, Row, Setting, Task, positive_int, register_task
from harness.tasks.reference import ReferenceConfig
from harness.tasks.suspects_labels import RETRAINING_HINT, SUGGEST_MODES
from harness.tasks.suspects_pairs import COLUMNS, named, partner_columns, pictures, sample_column, write_pairs
from harness.values import check_number
from proxies.base import Need, Proxy

#: The final eval pass over the training set: the model's own prediction of every sample.
EVAL_LAST = RecorderRequest.of("eval_pass", epochs="last")
#: Images drawn at most: a grid of 400 is already 50 rows.
MAX_K = 400
#: The largest near-duplicate search (N^2 x values per sample, twice for images searched mirrored too):
#: 16 x CIFAR-10's 50,000 x 3,072 values searched once, which took 185 s on one idle CPU thread
#: (evaluation runs on one), so ~50 minutes there.
MAX_NEAR_WORK = 16 * 50_000**2 * 3_072


def check_search_size(dataset: Dataset) -> None:
    """Refuse, before training, a near-duplicate search too big to finish in reasonable time, or to fit
    in the memory available (`check_search_memory`)."""
    n, values = len(dataset.x_train), dataset.x_train[0].numel() if len(dataset.x_train) else 0
    work = n * (n + len(dataset.x_test)) * values  # the training set against itself and the test split
    work *= 2 if searches_mirrors(dataset.x_train) else 1  # images: searched plain and mirrored
    work += shifted_work(dataset.x_train, n, len(dataset.x_test))
    if searches_values(dataset.x_train) and work > MAX_NEAR_WORK:
        test = f" (and {len(dataset.x_test)} test samples)" if len(dataset.x_test) else ""
        raise HarnessError(f"suspects: a near-duplicate search over {n} samples{test} of {values} values would "
                           "take an hour or more: it grows as N x (N + test samples) x values, twice for images, "
                           f"searched mirrored too, and stops at {MAX_NEAR_WORK:.1e} (~50 minutes on one CPU thread, "
                           "8 x CIFAR-10's 50,000 images); pass --task-arg suspects.duplicates=exact (byte-equal "
                           "copies only) or --task-arg suspects.duplicates=off")
    if searches_values(dataset.x_train):
        check_search_memory(dataset)


def shifted_work(x: torch.Tensor, n: int, m: int) -> int:
    """The shifted search's multiply-adds (`harness.near_duplicates_shifted`), 0 where it does not run:
    candidates by 7 x 7 pictures of each image and its mirror, then at most 50 shifts of each of the
    k + 1 candidates' interiors, 4 passes a window (~6 % of the plain and mirrored searches on CIFAR-10)."""
    if not searches_shifts(x):
        return 0
    c, h, w = (1, *x.shape[-2:]) if x.dim() == 3 else tuple(x.shape[1:])
    return 2 * n * (n + m) * c * 49 + 2 * (n + m) * (NEIGHBOURS + 1) * 50 * c * (h - 4) * (w - 4) * 4


def check_search_memory(dataset: Dataset, ctx: EvalContext | None = None) -> None:
    """Refuse a near-duplicate search estimated to need more memory than is available to it
    (`harness.search_memory`; not checked where that cannot be read). Before training (`ctx` None):
    the search runs after it, and running out there loses the task's output with no line saying why.
    Again right before the search (`ctx`, its runs stored): the process then holds what training and
    scoring left (a model, decoded data, caches), and other programs may have taken memory."""
    x, n, m = dataset.x_train, len(dataset.x_train), len(dataset.x_test)
    values = x[0].numel() if n else 0
    need = search_peak_bytes(n, m, values, searches_mirrors(x), x.element_size(), searches_table(x))
    available = available_bytes()
    if available is not None and need > available:
        store = None if ctx is None else str(ctx.config.store or default_store())
        raise refusal(n, m, values, need, available, store)


def ranked(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """`table` most suspicious first by `by` (NaN last; ties in index order), with a rank column."""
    table = table.sort_values(by, ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


@register_task
class Suspects(Task):
    name = "suspects"
    folders = ("suspects", "figures")
    figures_need_images = True  # its figures draw the suspects' images: none on a table
    headline = "predicted_other_at_k"
    description = ("your data as given, no injected noise: every sample ranked by a proxy, with the given, "
                   "predicted and suggested label (CSV), copies and near copies, the top k drawn (figure)")
    defaults = {"k": 40, "by": "", "duplicates": "near", "duplicate_threshold": THRESHOLD, "suggest": "on"}

    def __init__(self, reference: ReferenceConfig | None = None, **params: Any) -> None:
        super().__init__(reference, **params)
        self.by_seed: dict[int, pd.DataFrame] = {}  # each evaluated seed's table, in index order
        self.pairs: pd.DataFrame | None = None  # the duplicate pairs, found at the first seed (None: off)
        self.probs_by_seed: dict[int, np.ndarray] = {}  # each seed's (N, C) mean training-pass softmax

    def validate(self) -> None:
        positive_int(self.name, "k", self.params["k"], maximum=MAX_K)
        if not isinstance(self.params["by"], str):
            raise HarnessError(f"suspects.by must name a proxy, got {self.params['by']!r}")
        if self.params["duplicates"] not in MODES:
            raise HarnessError(f"suspects.duplicates must be one of {', '.join(MODES)}, "
                               f"got {self.params['duplicates']!r}")
        if self.params["suggest"] not in SUGGEST_MODES:
            raise HarnessError(f"suspects.suggest must be on or off, got {self.params['suggest']!r}")
        check_number(self.params["duplicate_threshold"], "suspects.duplicate_threshold",
                     "--task-arg suspects.duplicate_threshold (cleanlab's default is 0.13)", maximum=1.0)

    def check_proxies(self, proxies: list[Proxy]) -> None:
        """`by` must name a selected proxy (checked before training, once the proxies are known)."""
        labels = [p.label for p in proxies]
        by = self.params["by"]
        if by and by not in labels:
            from proxies.registry import available_proxies

            known = by.split("(")[0] in available_proxies()
            if known:
                raise HarnessError(f"suspects.by={by} names no selected proxy; pass one of {', '.join(labels)}, or "
                                   f"add {by} to --proxies")
            raise HarnessError(f"suspects.by={by} is no proxy (memprox list shows them); pass one of the selected "
                               f"proxies: {', '.join(labels)}")

    def sort_by(self, labels: list[str]) -> str | None:
        """`by`; csl or the first proxy when `by` is not given, or failed to score (reported as a failure)."""
        if self.params["by"] in labels:
            return self.params["by"]
        return "csl" if "csl" in labels else (labels[0] if labels else None)

    def settings(self, cfg: ExperimentConfig, base_data: DataSpec, dataset: Dataset) -> list[Setting]:
        n = len(dataset.x_train)
        if self.params["duplicates"] == "near":
            check_search_size(dataset)  # before training
        if self.params["k"] >= n:
            warnings.warn(f"suspects.k {self.params['k']} is not below the N={n} training samples: every proxy's "
                          "top k is every sample, so predicted_other_at_k is the same number for all of them (the "
                          "share the model predicts as another class); lower suspects.k to compare proxies",
                          stacklevel=2)
        return [Setting(self.name, "clean", base_data, seed) for seed in cfg.seeds]

    def needs(self, setting: Setting, base: RunSpec, cfg: ExperimentConfig) -> list[Need]:
        if self.params["suggest"] == "off":
            return [Need(base, frozenset({EVAL_LAST}))]
        return [Need(base, frozenset({EVAL_LAST, SUGGEST}))]

    def retraining_hint(self, key: str) -> str | None:
        """How a stored run lacking recorder `key` is reused as it is (`harness.upgrade_notice`)."""
        return RETRAINING_HINT if key == SUGGEST.key else None

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        eval_last = ctx.runs[ctx.base].arrays(EVAL_LAST.key)
        labels = ctx.data.labels
        predicted = np.asarray(eval_last["probs_last"]).argmax(axis=1)
        other = predicted != labels
        k = min(self.params["k"], ctx.data.n)
        rows: list[Row] = [{"proxy": proxy, "metric": "predicted_other_at_k", "value": precision_at_k(other, s, k)}
                           for proxy, s in scores.items()]
        by = self.sort_by(list(scores))
        if by is not None:
            if self.pairs is None:
                mode, threshold = self.params["duplicates"], float(self.params["duplicate_threshold"])
                self.pairs = duplicate_pairs(ctx, mode, threshold, k)
            probs = mean_probs(ctx.runs[ctx.base].arrays(SUGGEST.key)) if self.params["suggest"] == "on" else None
            table = self.table(ctx, scores, predicted, np.asarray(eval_last["p_label"])[-1], self.pairs, probs)
            if probs is not None:
                self.probs_by_seed[ctx.setting.seed] = probs
            self.write(ctx, ranked(table, by), by, k)
            self.by_seed[ctx.setting.seed] = table
            if len(self.by_seed) > 1:  # rewritten as each seed arrives: at the end it holds them all
                self.write_combined(ctx, by)
        return rows

    @staticmethod
    def table(ctx: EvalContext, scores: dict[str, np.ndarray], predicted: np.ndarray,
              p_label: np.ndarray, pairs: pd.DataFrame | None, probs: np.ndarray | None = None) -> pd.DataFrame:
        """Every sample in index order: file, labels, duplicates, the final model's view, the label
        suggested by the training pass's mean softmax `probs` (N, C; None: not recorded), the scores."""
        files = ctx.data.dataset.sample_names
        columns: dict[str, Any] = {"index": np.arange(ctx.data.n)}
        if files is not None:
            columns[sample_column(ctx.data.dataset)] = list(files)
        names = np.asarray(ctx.data.dataset.classes, dtype=object)  # ids alone send the reader to look up the order
        columns |= {"label": ctx.data.labels, "label_name": names[ctx.data.labels]}
        if pairs is not None:
            named_files = files if files is not None and sample_column(ctx.data.dataset) == "file" else None
            columns |= partner_columns(pairs, ctx.data.n, named_files)
        columns |= {"predicted": predicted, "predicted_name": names[predicted], "p_label": p_label}
        if probs is not None:
            columns |= suggested_columns(probs, np.asarray(ctx.data.labels), names)
        columns |= scores
        return pd.DataFrame(columns)

    def write_combined(self, ctx: EvalContext, by: str) -> None:
        """`suspects/suspects.csv`: the seeds' tables averaged per sample, ranked by the mean of `by`."""
        tables = [self.by_seed[s] for s in sorted(self.by_seed)]
        first = tables[0]
        keys = [c for c in ("index", "file", "text", "label", "label_name", "duplicates", "duplicate_files",
                            "duplicate_labels_differ") if c in first.columns]
        # a proxy that failed on some seed (reported as a failure) is left out of the mean
        apart = (*keys, "predicted", "predicted_name", *SUGGESTED_COLUMNS)  # not averaged
        numbers = [c for c in first.columns if c not in apart and all(c in t for t in tables)]
        combined = first[keys].copy()
        combined["n_seeds"] = len(tables)
        combined["predicted_other"] = np.mean([t["predicted"] != t["label"] for t in tables], axis=0)
        for column in numbers:
            combined[column] = np.mean([t[column].to_numpy(dtype=np.float64) for t in tables], axis=0)
        if set(self.by_seed) <= set(self.probs_by_seed):  # suggested by the seeds' mean softmax
            probs = np.mean([self.probs_by_seed[s] for s in sorted(self.by_seed)], axis=0)
            insert_suggested(combined, probs, combined["label"].to_numpy(dtype=np.int64),
                             np.asarray(ctx.data.dataset.classes, dtype=object), after="p_label")
        scored = [c for c in numbers if c != "p_label"]
        key = by if by in scored else self.sort_by(scored)
        if key is None:
            return
        ctx.keep_table("suspects", "suspects/suspects.csv", ranked(combined, key))

    @staticmethod
    def write(ctx: EvalContext, table: pd.DataFrame, by: str, k: int) -> None:
        seed = ctx.setting.seed
        ctx.keep_table("suspects", f"suspects/suspects_seed{seed}.csv", table)
        dataset = ctx.data.dataset
        if dataset.is_image and ctx.out is not None:
            out = Path(ctx.out)
            from harness.plots import plot_suspects

            shown = ["index", "label", "predicted", *(["suggested"] if "suggested" in table else []), by]
            top = table.head(k)[shown].rename(columns={by: "score"})
            figure = plot_suspects(top, pictures(ctx, top["index"]), by, out / "figures" / f"suspects_seed{seed}.png",
                                   list(dataset.classes), COLUMNS, files=named(dataset.sample_names, top["index"]))
            ctx.artifacts.setdefault("figures", []).append(str(figure.relative_to(out)))


def duplicate_pairs(ctx: EvalContext, mode: str, threshold: float, k: int) -> pd.DataFrame | None:
    """The copies and near copies among the training samples (the same for every seed; None: off),
    written and drawn by `write_pairs`, after checking that the search fits in what memory is left."""
    if mode == "off":
        return None
    if mode == "near" and searches_values(ctx.data.dataset.x_train):  # what training left may leave it too little
        check_search_memory(ctx.data.dataset, ctx)
    return write_pairs(ctx, mode, threshold, k)
