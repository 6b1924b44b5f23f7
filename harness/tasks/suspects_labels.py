"""Class labels in the suspects task's tables: each sample's suggested label, and class names beside
the ids of the duplicate-pair tables.

The suggested label answers "if the given label is wrong, what is it?": of the classes other than
the given one, the class the training pass gave the highest mean softmax over its epochs
(`harness.recorders.class_prob`). Whether the label is wrong is the proxies' rank; the suggestion
is never the given label. The final model's prediction suggests nothing for a memorised mislabeled
sample: it repeats the given label. Measured with one seed each (quick preset), share of the
flipped or moved samples whose rule gives their true class:

- digits, 180 of 1,797 labels flipped as the mislabeled task does (mlp, final training accuracy
  0.93): final prediction 121, highest mean softmax with the given label allowed 163, the final
  model's most probable other class 165, this rule 177;
- 2,000 CIFAR-10 images, 100 moved to a wrong class folder (small_cnn, training accuracy 0.9995):
  final prediction 0, highest mean softmax with the given label allowed 9 (the pass fits the moved
  images early), the final model's most probable other class 33, this rule 68.

A run stored before the suggested label existed lacks its recorder, and so does one stored by a task
that does not record it (cost, or suspects with `suggest=off`); the planner trains such a run
again to add it, recording what it recorded before along with it (the same numbers on a CPU with
the same thread count: csl and p_label came back bit for bit). That costs a training per seed, so
it is announced before training, with the way out: `suspects.suggest=off` reuses it as it is,
without the columns.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import ExperimentConfig
from harness.datasets import default_cache_dir
from harness.recorders import RecorderRequest
from harness.recorders.class_prob import NAME
from harness.runspec import RunSpec
from harness.store_entry_files import read_manifest

#: The training pass's summed softmax: the suggested label's source.
SUGGEST = RecorderRequest.of(NAME)
#: `suspects.suggest`: on (record the sums, write the columns) or off (neither).
SUGGEST_MODES = ("on", "off")
#: The columns the suggested label adds to a suspects table, in order.
SUGGESTED_COLUMNS = ("suggested", "suggested_name", "p_suggested")


def suggested_columns(probs: np.ndarray, labels: np.ndarray, names: np.ndarray) -> dict[str, Any]:
    """`suggested` (of the classes other than the given `labels`, the one of the highest mean
    training-pass softmax; the first on a tie), its `suggested_name` and that mean probability
    `p_suggested`, from the (N, C) mean softmax. A sample the pass never presented (a NaN row) gets
    empty cells, not class 0."""
    valid = ~np.isnan(probs).any(axis=1)
    others = np.nan_to_num(probs, nan=-1.0)
    others[np.arange(len(others)), labels] = -np.inf  # the given label is what is in doubt
    best = others.argmax(axis=1)
    suggested = pd.array(best, dtype="Int64")
    suggested[~valid] = pd.NA
    return {"suggested": suggested,
            "suggested_name": np.where(valid, names[best], None),
            "p_suggested": np.where(valid, probs[np.arange(len(probs)), best], np.nan)}


def insert_suggested(table: pd.DataFrame, probs: np.ndarray, names: np.ndarray) -> None:
    """The suggested columns of the mean softmax `probs` (and `table`'s `label`) into `table`, after
    `p_label` (where the per-seed tables have them), else at the end."""
    at = list(table.columns).index("p_label") + 1 if "p_label" in table else len(table.columns)
    labels = table["label"].to_numpy(dtype=np.int64)
    for offset, (column, values) in enumerate(suggested_columns(probs, labels, names).items()):
        table.insert(at + offset, column, values)


def with_class_names(pairs: pd.DataFrame, names: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    """`pairs` with `<column>_name` right after each label column: ids alone send the reader to look
    up the class order (the suspects CSV has `label_name` for the same reason). Other columns are
    kept where they are, whatever they are."""
    pairs = pairs.copy()
    for column in columns:
        at = pairs.columns.get_loc(column)
        assert isinstance(at, int)  # a label column appears once
        pairs.insert(at + 1, f"{column}_name", names[pairs[column].to_numpy(dtype=np.int64)])
    return pairs


def stored_without_suggest(cfg: ExperimentConfig, base: RunSpec) -> bool:
    """Whether the store holds `base` without the suggested label's recorder (stored before it
    existed). Read from the entry's manifest alone (no array is hashed); an entry that cannot be
    read counts as absent: the planner reports it, and trains it whatever this says."""
    digest = base.digest()
    entry = Path(cfg.store or default_cache_dir() / "store") / "runs" / digest  # `RunStore._dir`
    if not entry.is_dir():
        return False
    try:
        return SUGGEST.key not in read_manifest(entry, digest).recorders
    except (OSError, ValueError, KeyError, TypeError):
        return False


class RetrainingNotice:
    """Collects, while the plan is made (`Task.needs`, seed by seed in `cfg.seeds` order), the seeds
    whose stored clean run lacks the suggested label's recorder, and warns once at the last seed."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def note(self, cfg: ExperimentConfig, seed: int, base: RunSpec) -> None:
        if seed == cfg.seeds[0]:  # a new plan
            self.seeds = []
        if stored_without_suggest(cfg, base):
            self.seeds.append(seed)
        if seed == cfg.seeds[-1] and self.seeds:
            warn_retraining(self.seeds)


def warn_retraining(seeds: list[int]) -> None:
    """One line before training: stored runs train again to add the suggested label's recorder."""
    warnings.warn(f"suspects: the stored clean run(s) of seed(s) {', '.join(map(str, seeds))} lack the training "
                  "pass's class probabilities the suggested label is read from (stored before it existed, or by a "
                  "run that did not record them: another task's, such as cost, or one with suspects.suggest=off): they "
                  "train again once to add them, recording their other signals again; pass --task-arg "
                  "suspects.suggest=off to reuse them as they are, without the suggested columns", stacklevel=3)
