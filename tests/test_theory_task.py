"""The theory task: figures on disk, their index, and rows equal to direct computations.

A score file stands in for the memorization reference, so no stability models are trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.plots import binned_relation
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
    raw = Experiment(cfg).run().raw
    index = json.loads((cfg.out / "figures" / "index.json").read_text())["figures"]
    scores = pd.read_csv(cfg.out / "scores" / "clean_seed0.csv")
    return cfg, raw, index, scores


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
    assert sorted(p.name for p in (cfg.out / "figures").iterdir()) == sorted(
        [Path(p).name for p in index] + ["index.json"])


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


@pytest.mark.parametrize("args", [{"bins": 0}, {"per_class": "5"}, {"colour": 1}])
def test_bad_theory_args(make_config, digits, tmp_path: Path, args: dict) -> None:
    reference, _ = _reference(digits, tmp_path)
    with pytest.raises(HarnessError, match="theory"):
        Experiment(make_config(tasks=("theory",), subset=SUBSET, reference=reference, task_args={"theory": args}))
