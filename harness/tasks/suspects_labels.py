"""Class labels in the suspects task's tables: class names beside the ids of the duplicate-pair
tables, and the stored runs that must train again for the suggested label (its rule is
`harness.recorders.class_prob`'s, beside the sums it reads).

A run stored before the suggested label existed lacks its recorder, and so does one stored by a task
that does not record it (cost, or suspects with `suggest=off`); the planner trains such a run
again to add it, recording what it recorded before along with it (the same numbers on a CPU with
the same thread count: csl and p_label came back bit for bit). That costs a training per seed, so
the planner's notice (`harness.upgrade_notice`) says it before training, with this task's way out,
`RETRAINING_HINT`: `suspects.suggest=off` reuses the run as it is, without the columns. It is
offered only where it alone spares the training: a run stored by the cost task lacks the last eval
pass too, which suspects reads either way, so it trains again whatever is passed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.tracker.class_names import insert_name_columns

#: `suspects.suggest`: on (record the sums, write the columns) or off (neither).
SUGGEST_MODES = ("on", "off")
#: The way to reuse a stored run that lacks the suggested label's recorder, in the planner's notice.
RETRAINING_HINT = "pass --task-arg suspects.suggest=off to reuse them without the suggested label's columns"


def with_class_names(pairs: pd.DataFrame, names: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    """`pairs` with `<column>_name` right after each label column: ids alone send the reader to look
    up the class order (the suspects CSV has `label_name` for the same reason). Other columns are
    kept where they are, whatever they are."""
    pairs = pairs.copy()
    insert_name_columns(pairs, names, columns)
    return pairs
