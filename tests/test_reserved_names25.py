"""A proxy's name becomes a column of the per-sample tables, beside the task's own columns. Before,
`rank` (the suspects CSVs' first column) was not reserved: a proxy named `rank` registered, trained,
and the suspects task then failed with pandas' "cannot insert rank, already exists" traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.experiment import Experiment
from proxies import Proxy, registry
from proxies.registry import RESERVED_NAMES


def test_a_proxy_named_rank_is_refused_when_registered(fresh) -> None:
    cls = type("RankProxy", (Proxy,), {"name": "rank", "description": "d", "citation": "c",
                                        "score": lambda self, ctx: np.zeros(1)})
    with pytest.raises(TypeError, match="'rank', which the per-sample tables use for a column of their own"):
        registry.register_proxy(cls)
    assert "rank" not in fresh


def test_every_column_the_suspects_tables_write_besides_the_scores_is_reserved(make_config) -> None:
    """From the files a run writes (one seed's table and the seeds' combined one), not a list kept by
    hand: a column added to the task later must be reserved too, or a proxy of that name breaks it."""
    exp = Experiment(make_config(tasks=("suspects",), seeds=(0, 1), proxies="csl"))
    exp.run()
    folder = Path(exp.cfg.out) / "suspects"
    columns = {c for name in ("suspects.csv", "suspects_seed0.csv") for c in pd.read_csv(folder / name).columns}
    assert {"rank", "index", "label", "predicted", "suggested", "n_seeds"} <= columns
    assert columns - {"csl"} <= RESERVED_NAMES
