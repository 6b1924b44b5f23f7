"""What the figures draw, read back from the matplotlib objects (not just "a PNG was written"):
bin means break at empty bins and every bin shows its std, histograms of values on a lattice
(learning time = k/E) have no aliasing comb, axes name the quantity's proxy and unit, the ROC
marks the TPR at the reported FPRs, and every suspect image is captioned with its sample index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import harness.plots as plots
import harness.privacy_plots as privacy_plots
from baselines.privacy import attack_metrics
from harness.config import ExperimentConfig
from harness.datasets import load_dataset
from harness.prepared import prepare
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.tasks import EvalContext, make_tasks

SUBSET = 200


@pytest.fixture
def drawn(monkeypatch) -> dict[str, Figure]:
    """Every figure saved during the test, by file name, as the Figure object that was drawn."""
    figures: dict[str, Figure] = {}
    real = plots.save_figure

    def keep(fig: Figure, path: str | Path) -> Path:
        figures[Path(path).name] = fig
        return real(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    monkeypatch.setattr(privacy_plots, "save_figure", keep)
    return figures


def test_binned_plot_breaks_at_empty_bins_and_shows_each_bins_std(drawn, tmp_path: Path) -> None:
    # 5 bins of width 1 over [0, 5]: bins 1 and 3 are empty, bin 2 lies alone between them
    x = np.array([0.0, 0.5, 2.2, 2.6, 4.5, 5.0])
    y = np.array([1.0, 3.0, 10.0, 14.0, 5.0, 9.0])
    plots.plot_binned(x, y, "x", "y", tmp_path / "b.png", bins=5)
    ax = drawn["b.png"].axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "bin mean"]
    np.testing.assert_allclose(line.get_xdata(), [0.5, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(line.get_ydata(), [2.0, np.nan, 12.0, np.nan, 7.0])  # no line across
    # the ± std of every non-empty bin is a vertical bar at its center, the isolated one included
    bars = sorted(tuple(np.round(seg, 12).ravel()) for c in ax.collections for seg in c.get_segments())
    assert bars == [(0.5, 1.0, 0.5, 3.0), (2.5, 10.0, 2.5, 14.0), (4.5, 5.0, 4.5, 9.0)]


def test_histogram_of_lattice_values_has_one_bar_per_lattice_group(drawn, tmp_path: Path) -> None:
    # learning time after E = 60 epochs, uniform: 50 equal-width bins would hold 1 or 2 values
    # each, a comb of bars 10 and 20 high that looks like structure
    values = np.repeat(np.arange(1, 61) / 60, 10)
    plots.plot_histogram(values, "learning time", tmp_path / "h60.png")
    heights = [p.get_height() for p in drawn["h60.png"].axes[0].patches]
    assert heights == [20.0] * 30
    # E = 10 (fewer lattice points than bins): one bar per value, centered on it
    values = np.repeat(np.arange(1, 11) / 10, [5, 1, 1, 1, 1, 1, 1, 1, 1, 7])
    plots.plot_histogram(values, "learning time", tmp_path / "h10.png")
    bars = drawn["h10.png"].axes[0].patches
    np.testing.assert_allclose([p.get_x() + p.get_width() / 2 for p in bars], np.arange(1, 11) / 10)
    assert [p.get_height() for p in bars] == [5.0] + [1.0] * 8 + [7.0]
    # continuous values keep the equal-width bins over their range
    gamma = np.random.default_rng(0).gamma(2, size=500)
    plots.plot_histogram(gamma, "CSL", tmp_path / "hg.png")
    counts, _ = np.histogram(gamma, bins=50)
    assert [p.get_height() for p in drawn["hg.png"].axes[0].patches] == counts.tolist()


def _theory(tmp_path: Path, task_args: dict, scores: dict[str, np.ndarray]) -> None:
    """The theory task on hand-made scores and a score-file reference (nothing trained)."""
    labels = load_dataset("digits").y_train.numpy()
    np.savez(tmp_path / "fz.npz", tr_mem=np.random.default_rng(1).random(len(labels)), tr_labels=labels)
    (task,) = make_tasks(["theory"], {"theory": task_args}, f"fz:{tmp_path / 'fz.npz'}")
    out = tmp_path / "out"
    cfg = ExperimentConfig(seeds=(3,), subset=SUBSET, out=out)
    dataset = load_dataset("digits", subset=SUBSET)
    (setting,) = task.settings(cfg, DataSpec(subset=SUBSET), dataset)
    data = prepare(setting.data, dataset, torch.device("cpu"))
    ctx = EvalContext(setting, RunSpec(data=setting.data, model="mlp", recipe=Recipe()), data, {}, cfg, [], out=out)
    task.evaluate(ctx, scores)


def test_theory_axes_name_the_reference_the_rule_and_the_seed(drawn, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = {"csl": rng.random(SUBSET), "learning_time(rule=count)": rng.integers(0, 5, SUBSET) / 4}
    _theory(tmp_path, {"rule": "count"}, scores)
    ax = drawn["learning_time_vs_memorization_seed3.png"].axes[0]
    assert "fz:fz.npz" in ax.get_xlabel()  # a score file, not stability memorization
    assert "learning_time(rule=count)" in ax.get_ylabel() and "fraction of epochs" in ax.get_ylabel()
    assert "seed 3" in ax.get_title()
    assert "learning_time(rule=count)" in drawn["learning_time_histogram_seed3.png"].axes[0].get_xlabel()
    assert "summed over epochs" in drawn["csl_histogram_seed3.png"].axes[0].get_xlabel()


def test_roc_marks_the_tpr_at_each_reported_fpr(drawn, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    members = rng.random(20_000) < 0.5
    result = attack_metrics(rng.normal(size=20_000) + 0.5 * members, members)
    privacy_plots.plot_attack_roc(result, tmp_path / "roc.png")
    ax = drawn["roc.png"].axes[0]
    (marks,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("TPR at")]
    np.testing.assert_allclose(marks.get_xdata(), [0.001, 0.01])
    np.testing.assert_allclose(marks.get_ydata(), [result.tpr_at[0.001], result.tpr_at[0.01]])
    assert "0.1% FPR" in marks.get_label() and "1% FPR" in marks.get_label()


def test_suspect_captions_name_the_sample_index_also_when_the_grid_is_reused(drawn, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 1, 4, 4), dtype=np.uint8)
    labels = np.repeat([0, 1], 6)
    for name in ("a.png", "b.png"):  # the second call redraws the cached grid of the same layout
        scores = rng.permutation(12).astype(float)
        plots.plot_extreme_images(images, labels, scores, ["zero", "one"], tmp_path / name, per_class=2)
        want = []
        for c in (0, 1):
            members = np.flatnonzero(labels == c)
            order = members[np.argsort(-scores[members])]
            want.append([*order[:2], *order[::-1][:2]])
        high, low = drawn[name].subfigs
        got = [[ax.get_title() for ax in high.axes[2 * c:2 * c + 2] + low.axes[2 * c:2 * c + 2]] for c in (0, 1)]
        assert got == [[f"#{i}: {scores[i]:.3g}" for i in row] for row in want]
        for c, row in enumerate(want):
            for ax, i in zip(high.axes[2 * c:2 * c + 2] + low.axes[2 * c:2 * c + 2], row, strict=True):
                np.testing.assert_array_equal(ax.images[0].get_array(), images[i, 0])
