"""The theory task: figures on disk listed as the experiment's artifacts, rows equal to direct
computations, the learning-time rule parameter, and no files without an output folder.

A score file stands in for the memorization reference, so no stability models are trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from harness.config import ExperimentConfig
from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.plots import binned_relation
from harness.prepared import prepare
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.tasks import EvalContext, make_tasks
from harness.tasks.theory import NOT_SELECTED, bimodality_coefficient

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUBSET = 300


def _reference(digits, tmp_path: Path) -> tuple[str, np.ndarray]:
    labels = digits.y_train.numpy()
    mem = np.random.default_rng(1).random(len(labels))
    np.savez(tmp_path / "fz.npz", tr_mem=mem, tr_labels=labels)
    return f"fz:{tmp_path / 'fz.npz'}", mem[:SUBSET]


def _run(make_config, reference: str, proxies: str, **task_args):
    cfg = make_config(tasks=("theory",), proxies=proxies, subset=SUBSET, epochs=2, reference=reference,
                      task_args={"theory": task_args} if task_args else {})
    result = Experiment(cfg).run()
    index = result.outputs.get("figures", [])
    assert json.loads((cfg.out / "summary.json").read_text())["outputs"].get("figures", []) == index
    assert not (cfg.out / "figures" / "index.json").exists()
    scores = pd.read_csv(cfg.out / "scores" / "clean_seed0.csv")
    return cfg, result.raw, index, scores


def test_all_figures_and_rows(make_config, digits, tmp_path: Path) -> None:
    reference, mem = _reference(digits, tmp_path)
    cfg, raw, index, scores = _run(make_config, reference, "csl,learning_time", bins=8)
    assert index == [f"figures/{name}_seed0.png" for name in (
        "learning_time_vs_memorization", "csl_vs_learning_time", "csl_vs_memorization",
        "csl_histogram", "learning_time_histogram", "csl_extremes")]
    for rel in index:
        assert (cfg.out / rel).read_bytes()[:8] == PNG_MAGIC
    assert NOT_SELECTED not in set(raw.metric)
    values = {"csl": scores["csl"].to_numpy(), "learning_time": scores["learning_time"].to_numpy(),
              "memorization": mem}
    got = raw.set_index(["proxy", "metric"]).value
    for y, x in (("learning_time", "memorization"), ("csl", "learning_time"), ("csl", "memorization")):
        want = stats.spearmanr(values[x], values[y]).statistic
        assert got[(f"{y} vs {x}", "spearman")] == pytest.approx(want, abs=1e-12)
        table = binned_relation(values[x], values[y], bins=8)
        # fewer than 3 bins (learning time takes E + 1 values) say nothing about a trend: NaN
        want = stats.spearmanr(table["bin_center"], table["mean"]).statistic if len(table) >= 3 else np.nan
        assert got[(f"{y} vs {x}", "binned_spearman")] == pytest.approx(want, abs=1e-12, nan_ok=True)
    for q in ("csl", "learning_time"):
        assert got[(q, "skewness")] == pytest.approx(stats.skew(values[q]), abs=1e-9)
        assert got[(q, "bimodality_coefficient")] == pytest.approx(bimodality_coefficient(values[q]), abs=1e-12)


def test_missing_proxies_are_skipped_with_a_row(make_config, digits, tmp_path: Path) -> None:
    reference, _ = _reference(digits, tmp_path)
    cfg, raw, index, _ = _run(make_config, reference, "csl,final_loss")
    assert index == ["figures/csl_vs_memorization_seed0.png", "figures/csl_histogram_seed0.png",
                     "figures/csl_extremes_seed0.png"]
    skipped = raw[raw.metric == NOT_SELECTED]
    assert set(skipped.proxy) == {"learning_time vs memorization", "csl vs learning_time",
                                  "learning_time histogram"}
    assert skipped.value.isna().all()
    assert sorted(p.name for p in (cfg.out / "figures").iterdir()) == sorted(Path(p).name for p in index)


def _direct(tmp_path: Path, task_args: dict, scores: dict[str, np.ndarray], out: Path | None):
    """Evaluate the theory task on hand-made scores without training anything."""
    reference, mem = _reference(load_dataset("digits"), tmp_path)
    (task,) = make_tasks(["theory"], {"theory": task_args}, reference)
    cfg = ExperimentConfig(seeds=(0,), subset=SUBSET, out=out)
    (setting,) = task.settings(cfg, DataSpec(subset=SUBSET), load_dataset("digits", subset=SUBSET))
    data = prepare(setting.data, load_dataset("digits", subset=SUBSET), torch.device("cpu"))
    ctx = EvalContext(setting, RunSpec(data=setting.data, model="mlp", recipe=Recipe()), data, {}, cfg, [], out=out)
    rows = task.evaluate(ctx, scores)
    return {(r["proxy"], r["metric"]): r["value"] for r in rows}, ctx, mem


def test_rule_parameter_picks_the_learning_time_variant(tmp_path: Path) -> None:
    """theory.rule=count reads the scores of learning_time(rule=count); with only the paper's
    rule's proxy selected, learning time counts as "not selected"."""
    rng = np.random.default_rng(0)
    first, count = rng.integers(1, 5, SUBSET) / 4, rng.integers(0, 5, SUBSET) / 4
    scores = {"csl": rng.random(SUBSET), "learning_time": first, "learning_time(rule=count)": count}
    got, _, mem = _direct(tmp_path, {"rule": "count"}, scores, None)
    assert got[("learning_time vs memorization", "spearman")] == pytest.approx(stats.spearmanr(mem, count).statistic)
    assert got[("learning_time", "skewness")] == pytest.approx(stats.skew(count))
    got, _, _ = _direct(tmp_path, {}, scores, None)  # default: the paper's rule
    assert got[("learning_time", "skewness")] == pytest.approx(stats.skew(first))
    got, _, _ = _direct(tmp_path, {"rule": "count"}, {"csl": scores["csl"], "learning_time": first}, None)
    assert np.isnan(got[("learning_time vs memorization", NOT_SELECTED)])


def test_no_output_folder_writes_no_figures(tmp_path: Path, monkeypatch) -> None:
    """With ctx.out None (an experiment without --out) the task computes its rows and writes nothing
    (test_all_figures_and_rows covers the figures of an experiment with a folder)."""
    rng = np.random.default_rng(0)
    scores = {"csl": rng.random(SUBSET), "learning_time": rng.integers(0, 5, SUBSET) / 4}
    monkeypatch.chdir(tmp_path)
    got, ctx, mem = _direct(tmp_path, {"bins": 5}, scores, None)
    assert ctx.artifacts == {} and not list(tmp_path.rglob("*.png"))
    assert got[("csl vs memorization", "spearman")] == pytest.approx(stats.spearmanr(mem, scores["csl"]).statistic)


def test_bimodality_coefficient_by_hand() -> None:
    two_points = np.repeat([0.0, 1.0], 5000)  # skew 0, excess kurtosis -> -2: coefficient -> 1
    assert bimodality_coefficient(two_points) == pytest.approx(1.0, abs=1e-3)
    uniform = np.linspace(0, 1, 100_001)  # skew 0, excess kurtosis -6/5: (0 + 1) / (9/5) = 5/9
    assert bimodality_coefficient(uniform) == pytest.approx(5 / 9, abs=1e-3)
    # n = 4: skew and kurtosis by the bias-corrected formulas, written out
    v = np.array([0.0, 0.0, 1.0, 3.0])
    n, m = 4, v.mean()
    m2, m3, m4 = (((v - m) ** p).mean() for p in (2, 3, 4))
    g1 = np.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5
    g2 = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
    assert bimodality_coefficient(v) == pytest.approx((g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))
    assert np.isnan(bimodality_coefficient(np.ones(10)))


@pytest.mark.parametrize("args", [{"bins": 0}, {"per_class": "5"}, {"per_class": 51}, {"colour": 1}, {"rule": "last"}])
def test_bad_theory_args(make_config, digits, tmp_path: Path, args: dict) -> None:
    reference, _ = _reference(digits, tmp_path)
    with pytest.raises(HarnessError, match="theory"):
        Experiment(make_config(tasks=("theory",), subset=SUBSET, reference=reference, task_args={"theory": args}))


def test_skewness_of_a_constant_is_nan_without_warnings() -> None:
    import warnings

    from harness.tasks.theory import skewness

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(skewness(np.ones(50))) and np.isnan(skewness(np.array([1.0, np.nan])))
    v = np.array([0.0, 0.0, 1.0, 5.0, np.nan])
    assert skewness(v) == pytest.approx(stats.skew(v[:4]))
