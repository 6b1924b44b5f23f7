"""The null simulation behind docs/extending.md's "Is it better than CSL?": proxies of equal true
quality (one signal plus independent noise of one size), 3 seeds, N = 500, B = 200, AUROC. With two
proxies `tied_with_best` is a two-sided 95 % test (the best is picked by the same data), and a
little conservative; among six equal proxies each one that is not the best is marked "not tied"
more often, because the best is the luckiest of six. The docs quote the shares this computes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.bootstrap import Resamples
from harness.leaderboard import aggregate
from harness.tasks.base import detection_rows


def _not_tied_shares(proxies: int, experiments: int, n: int = 500, b: int = 200, seeds: int = 3
                     ) -> tuple[float, float]:
    """(share of non-best proxies not tied among `proxies`, share for the first two alone)."""
    rng = np.random.default_rng(7)
    among = alone = 0
    for t in range(experiments):
        rows = []
        for seed in range(seeds):
            y = rng.random(n) < 0.1
            scores = {f"p{i}": y + rng.normal(0, 0.6, n) for i in range(proxies)}
            for r in detection_rows(y, scores, ("auroc",), Resamples.draw(n, b, "sim", t, seed)):
                rows.append({"task": "sim", "dataset": "d", "model": "m", "setting": f"t{t}", "seed": seed, **r})
        raw = pd.DataFrame(rows)
        among += int((~aggregate(raw)["tied_with_best"].astype(bool)).sum())
        alone += int((~aggregate(raw[raw.proxy.isin(["p0", "p1"])])["tied_with_best"].astype(bool)).sum())
    return among / (experiments * (proxies - 1)), alone / experiments


def test_a_few_experiments_run_and_count() -> None:
    among, alone = _not_tied_shares(proxies=3, experiments=2, n=200, b=50)
    assert 0.0 <= among <= 1.0 and alone in (0.0, 0.5, 1.0)


@pytest.mark.slow
def test_the_shares_docs_extending_quotes() -> None:
    among, alone = _not_tied_shares(proxies=6, experiments=500)
    assert round(alone, 3) == 0.028  # two equal proxies: at most the nominal 5 %, conservative
    assert round(among, 3) == 0.056  # six: each non-best proxy more often than two alone
