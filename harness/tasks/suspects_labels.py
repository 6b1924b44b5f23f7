"""Class labels in the suspects task's tables: class names beside the ids of the duplicate-pair
tables, and the stored runs that must train again for the suggested label (its rule is
`harness.recorders.class_prob`'s, beside the sums it reads).

A run stored before the suggested label existed lacks its recorder, and so does one stored by a task
that does not record it (cost, or suspects with `suggest=off`); the planner trains such a run
again to add it, recording what it recorded before along with it (the same numbers on a CPU with
the same thread count: csl and p_label came back bit for bit). That costs a training per seed, so
it is announced before training, with the way out: `suspects.suggest=off` reuses it as it is,
without the columns.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from harness.config import ExperimentConfig
from harness.recorders.class_prob import SUGGEST
from harness.runspec import RunSpec
from harness.store import RunStore, default_store
from harness.store_entry_files import read_manifest

#: `suspects.suggest`: on (record the sums, write the columns) or off (neither).
SUGGEST_MODES = ("on", "off")


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
    entry = RunStore(cfg.store or default_store(), create=False).entry_dir(base)
    if not entry.is_dir():
        return False
    try:
        return SUGGEST.key not in read_manifest(entry, base.digest()).recorders
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
