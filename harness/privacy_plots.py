"""Figures of the privacy task: the membership-inference attack's ROC curve on log-log axes (the
convention of the MIA literature since Carlini et al. 2022: what matters is the TPR at very low
FPR, which a linear plot squeezes into its corner). The proxy-vs-vulnerability plots are the
theory task's binned plots (``harness.plots.plot_binned``), reused as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from baselines.privacy import AttackResult
from harness.plots import new_figure, save_figure


def plot_attack_roc(result: AttackResult, path: str | Path, title: str = "") -> Path:
    """PNG of the attack's ROC curve (log-log), the chance diagonal, its AUROC in the legend, and
    a marker at the TPR of each reported FPR, where the curve is read (legend: "TPR at 0.1% FPR").
    Points at FPR or TPR 0 cannot be drawn on log axes."""
    fig = new_figure((4.2, 4.0))
    ax = fig.add_subplot()
    keep = (result.fpr > 0) & (result.tpr > 0)
    tprs = "\n".join(f"TPR at {100 * a:g}% FPR = {t:.3f}" for a, t in result.tpr_at.items())
    marks = {a: t for a, t in result.tpr_at.items() if np.isfinite(t) and t > 0}
    curve = f"LiRA, AUROC = {result.auroc:.3f}" + ("" if marks else f"\n{tprs}")
    ax.plot(result.fpr[keep], result.tpr[keep], label=curve)
    if marks:
        ax.plot(list(marks), list(marks.values()), linestyle="none", marker="o", markersize=4, color="C3",
                label=tprs)
    lowest = max(1.0 / max(result.pairs, 1), 1e-5)
    ax.plot([lowest, 1], [lowest, 1], linestyle="--", color="gray", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lowest, 1)
    ax.set_ylim(lowest, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    return save_figure(fig, path)


def best_other(spearman: dict[str, float], exclude: str = "csl") -> str | None:
    """The proxy other than `exclude` with the highest finite Spearman with v (None if none)."""
    finite = {p: s for p, s in spearman.items() if p != exclude and np.isfinite(s)}
    return max(finite, key=finite.__getitem__) if finite else None
