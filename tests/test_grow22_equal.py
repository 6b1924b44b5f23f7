"""An experiment grown step by step on one store (seeds, then proxies with new recorders) gives the
numbers a fresh run of its final configuration gives on an empty store, bitwise, and says which
runs it trained and which it reused (docs/experiments.md, "Growing an experiment")."""

from __future__ import annotations

import pandas as pd

from harness.experiment import Experiment

#: What only timing decides: a run reused from the store keeps the seconds measured when it trained.
TIMED = ("seconds", "seconds_rel")
FINAL = {"proxies": "csl,final_loss", "tasks": ("mislabeled", "cost"), "seeds": (0, 1)}


def _untimed(board: pd.DataFrame) -> pd.DataFrame:
    rows = board[~board["metric"].isin(TIMED)]
    return rows[[c for c in rows.columns if "seconds" not in c]].reset_index(drop=True)


def test_a_grown_experiment_equals_a_fresh_one(make_config, tmp_path) -> None:
    def run(store: str, **options):
        cfg = make_config(store=tmp_path / store, out=None, subset=300, bootstrap=50, **options)
        return Experiment(cfg).run()

    first = run("grown", proxies="csl", tasks=("mislabeled",), seeds=(0,))
    assert first.trained == ["digits noise=0.1 mlp seed0"] and first.reused == []
    more_seeds = run("grown", proxies="csl", tasks=("mislabeled",), seeds=(0, 1))
    assert more_seeds.trained == ["digits noise=0.1 mlp seed1"]
    assert more_seeds.reused == ["digits noise=0.1 mlp seed0"]
    grown = run("grown", **FINAL)  # final_loss's eval pass: both base runs train again, keeping csl's record
    assert sorted(grown.trained) == ["digits noise=0.1 mlp seed0", "digits noise=0.1 mlp seed1"]
    assert grown.reused == []
    fresh = run("fresh", **FINAL)

    assert set(grown.scores) == set(fresh.scores) == {"noise=0.1_seed0", "noise=0.1_seed1"}
    for key, scores in fresh.scores.items():
        pd.testing.assert_frame_equal(grown.scores[key], scores, check_exact=True)
    for key in ("noise=0.1_seed0", "noise=0.1_seed1"):  # csl as the first steps scored it
        step = first if key.endswith("0") else more_seeds
        pd.testing.assert_series_equal(step.scores[key]["csl"], fresh.scores[key]["csl"], check_exact=True)
    assert len(_untimed(fresh.leaderboard)) > 0
    assert set(fresh.leaderboard["task"]) == {"mislabeled", "cost"}
    pd.testing.assert_frame_equal(_untimed(grown.leaderboard), _untimed(fresh.leaderboard), check_exact=True)
    pd.testing.assert_frame_equal(_untimed(grown.raw), _untimed(fresh.raw), check_exact=True)
