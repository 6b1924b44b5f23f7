"""Audit of the leaderboard's aggregation and the cost accounting, recomputed by hand: the
committed digits leaderboard against its raw rows and its markdown, each proxy charged exactly
the runs it needs, and the digits MLP's FLOPs counted by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.cost import proxy_cost
from harness.leaderboard import KEYS, headline_metrics
from harness.recipe import Recipe
from harness.recorders import EVAL_LAST
from harness.runspec import DataSpec, RunSpec
from harness.tasks.cost import Cost
from proxies import make_proxy
from proxies.ssft import SSFT_CORRECT

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "digits-default"

#: The digits MLP (harness.models.mlp): 64 -> 256 -> 256 -> 10. A forward pass is 2 FLOPs per
#: weight; training adds the backward pass, twice the forward except the first layer's input
#: gradient (the input needs none). FlopCounterMode counts matmuls only.
LAYERS = [(64, 256), (256, 256), (256, 10)]
FORWARD = 2 * sum(i * o for i, o in LAYERS)
TRAIN = 3 * FORWARD - 2 * 64 * 256


def test_committed_leaderboard_recomputed_from_raw_rows() -> None:
    """Every row's mean, sample std (ddof=1) and seed count (NaN seeds not counted) from raw.csv."""
    raw = pd.read_csv(COMMITTED / "raw.csv")
    board = pd.read_csv(COMMITTED / "leaderboard.csv")
    mine = (raw.dropna(subset=["value"]).groupby(KEYS)["value"]
            .agg(m=lambda v: v.mean(), s=lambda v: v.std(ddof=1), n="size").reset_index())
    both = board.merge(mine, on=KEYS, how="left")
    assert len(both) == len(board) == raw[KEYS].drop_duplicates().shape[0]
    np.testing.assert_allclose(both["mean"], both["m"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(both["std"], both["s"], rtol=1e-10, atol=1e-12)
    assert (both["n_seeds"] == both["n"].fillna(0)).all()
    # only proxy rows with replicates are compared; cost, reference and theory rows never are
    compared = board[board["tied_with_best"].notna()]
    assert not compared["task"].isin(["cost", "theory"]).any() and not (compared["proxy"] == "reference").any()
    for _, group in compared.groupby(["task", "setting", "metric"]):
        best = group.loc[group["mean"].idxmax()]
        assert bool(best["tied_with_best"]) and best["p_vs_best"] == 1.0


def test_committed_markdown_bold_matches_tied_with_best() -> None:
    board = pd.read_csv(COMMITTED / "leaderboard.csv")
    md = (COMMITTED / "leaderboard.md").read_text()
    checked = 0
    for section in md.split("### ")[1:]:
        task = section.split(":")[0]
        metric = headline_metrics([task])[task]
        lines = [line for line in section.splitlines() if line.startswith("|")]
        settings = [c.strip() for c in lines[0].strip("|").split("|")][1:]
        for line in lines[2:]:
            proxy, *cells = (c.strip() for c in line.strip("|").split("|"))
            for setting, cell in zip(settings, cells, strict=True):
                row = board[(board.task == task) & (board.metric == metric) & (board.proxy == proxy)
                            & (board.setting == setting)].iloc[0]
                assert cell.startswith("**") == (row["tied_with_best"] is True), (task, proxy, setting)
                assert float(cell.strip("*").split()[0]) == pytest.approx(row["mean"], abs=5e-4)
                checked += 1
    assert checked == 128


def _fake_run(train_flops: float, train_seconds: float, recorders: dict[str, tuple[float, float]]) -> SimpleNamespace:
    cost = {k: SimpleNamespace(flops=f, seconds=s) for k, (f, s) in recorders.items()}
    return SimpleNamespace(manifest=SimpleNamespace(train_flops=train_flops, train_seconds=train_seconds,
                                                    recorders=cost))


def test_each_proxy_is_charged_exactly_the_runs_it_needs() -> None:
    """ssft and confident_learning never read the base run: they pay their own runs only (as the
    stability reference pays its K models only); final_loss pays the base run and its eval pass."""
    base = RunSpec(data=DataSpec(), model="mlp", recipe=Recipe(), seed=0)
    ssft, cl, final = make_proxy("ssft"), make_proxy("confident_learning"), make_proxy("final_loss")
    runs = {base: _fake_run(100.0, 10.0, {EVAL_LAST.key: (1.0, 0.5)})}
    for spec in ssft.run_specs(base):
        runs[spec] = _fake_run(60.0, 4.0, {SSFT_CORRECT.key: (5.0, 1.0)})
    for spec in cl.fold_specs(base):
        runs[spec] = _fake_run(70.0, 6.0, {EVAL_LAST.key: (2.0, 0.25)})
    assert proxy_cost(ssft, base, runs) == pytest.approx(
        {"flops": 130.0, "seconds": 10.0, "flops_rel": 1.3, "seconds_rel": 1.0})
    assert proxy_cost(cl, base, runs) == pytest.approx(
        {"flops": 216.0, "seconds": 18.75, "flops_rel": 2.16, "seconds_rel": 1.875})
    assert proxy_cost(final, base, runs) == pytest.approx(
        {"flops": 101.0, "seconds": 10.5, "flops_rel": 1.01, "seconds_rel": 1.05})


def test_cost_task_needs_the_plain_base_run() -> None:
    base = RunSpec(data=DataSpec(), model="mlp", recipe=Recipe(), seed=0)
    needs = Cost().needs(None, base, None)  # type: ignore[arg-type]
    assert [(n.spec, n.recorders) for n in needs] == [(base, frozenset())]


def test_cost_alone_with_own_run_proxies_and_flops_by_hand(tmp_path: Path, capsys) -> None:
    """`--tasks cost --proxies ssft,confident_learning` reads no base run, yet the ratios divide
    by it: it is trained (the old code raised KeyError after training). FLOPs by hand: the plain
    run is N x E x TRAIN; ssft's two two-phase runs train N x E samples each and evaluate each
    first half after every second-phase epoch; the 3 folds train 2N x E in all and each
    evaluates all N once."""
    out, epochs = tmp_path / "out", 2
    code = main(["run", "--proxies", "ssft,confident_learning", "--tasks", "cost", "--seeds", "1",
                 "--subset", "200", "--epochs", str(epochs), "--executor", "inprocess", "--device", "cpu",
                 "--no-progress", "--out", str(out), "--store", str(tmp_path / "store")])
    assert code == 0, capsys.readouterr().err
    n = len(pd.read_csv(out / "scores" / "clean_seed0.csv"))
    cost = pd.read_csv(out / "raw.csv").set_index(["proxy", "metric"])["value"]
    plain = n * epochs * TRAIN
    assert cost["ssft", "flops"] == pytest.approx(n * epochs * (2 * TRAIN + FORWARD), rel=1e-9)
    assert cost["ssft", "flops_rel"] == pytest.approx(cost["ssft", "flops"] / plain, rel=1e-9)
    assert cost["confident_learning", "flops"] == pytest.approx(2 * n * epochs * TRAIN + 3 * n * FORWARD, rel=1e-6)
    assert cost["confident_learning", "flops_rel"] == pytest.approx(2 + 3 * FORWARD / (epochs * TRAIN), rel=1e-6)


def test_memorization_with_own_run_proxies_only_has_no_reference_ratio(tmp_path: Path, capsys) -> None:
    """`--tasks memorization --proxies ssft` trains no base run; the reference's cost ratio divided
    by it and raised KeyError after training. Now the absolute cost stays, the ratios are NaN."""
    out = tmp_path / "out"
    code = main(["run", "--proxies", "ssft", "--tasks", "memorization", "--task-arg", "memorization.k=3",
                 "--seeds", "1", "--subset", "200", "--epochs", "1", "--executor", "inprocess", "--device", "cpu",
                 "--no-progress", "--out", str(out), "--store", str(tmp_path / "store")])
    assert code == 0, capsys.readouterr().err
    ref = pd.read_csv(out / "raw.csv").set_index(["proxy", "metric"])["value"]["reference"]
    assert ref["reference_flops"] > 0 and np.isnan(ref["reference_flops_rel"]) and np.isnan(
        ref["reference_seconds_rel"])
