"""leaderboard.md tables each task by the metric the task declares (`Task.headline`): before, a
fixed list of the built-in tasks' metrics left a plugin task's leaderboard.md empty, though the
extending guide promised its rows "like every other task" (docs audit, helper-94)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import run_experiment
from harness.leaderboard import aggregate, headline_metrics, markdown
from harness.tasks import Setting, Task, register_task
from harness.tasks.base import detection_rows


class _Plugin(Task):
    name = "plugin_headline"
    description = "a task from another package"
    headline = "hits"


class _Figures(Task):
    name = "plugin_figures"
    description = "a task of figures: no one number to compare"


def _raw(tasks: dict[str, str]) -> pd.DataFrame:
    rows = [{"task": t, "dataset": "digits", "model": "mlp", "setting": "s", "seed": seed, "proxy": p,
             "metric": m, "value": v}
            for t, m in tasks.items() for p, v in (("csl", 0.75), ("aum", 0.25)) for seed in (0, 1)]
    return pd.DataFrame(rows)


def _tables(md: str) -> list[tuple[str, str]]:
    return re.findall(r"^### ([\w-]+): (\w+) ", md, re.M)


def test_the_builtin_tasks_declare_the_metrics_the_docs_name() -> None:
    assert headline_metrics(["mislabeled", "duplicates", "cost", "memorization", "theory", "privacy", "suspects"]) \
        == {"mislabeled": "auroc", "duplicates": "auroc", "cost": "seconds_rel", "memorization": "pearson",
            "privacy": "spearman", "suspects": "predicted_other_at_k"}
    assert headline_metrics(["no_such_task", "theory"]) == {}


def test_a_plugin_tasks_headline_gets_a_table_and_a_task_without_one_none(fresh_tasks) -> None:
    register_task(_Plugin)
    register_task(_Figures)
    board = aggregate(_raw({"plugin_figures": "hits", "cost": "seconds_rel", "plugin_headline": "hits",
                            "theory": "spearman"}))
    md = markdown(board)
    # the board's order (that of --tasks), tasks without a headline left out
    assert _tables(md) == [("cost", "seconds_rel"), ("plugin_headline", "hits")]
    plugin = md.split("### plugin_headline")[1]
    assert plugin.index("| csl") < plugin.index("| aum")  # higher is better: the best first
    assert "0.750 ± 0.000" in plugin
    # a caller's mapping wins
    assert _tables(markdown(board, headlines={"theory": "spearman"})) == [("theory", "spearman")]


@pytest.mark.parametrize("headline", [3, "", ("auroc",)])
def test_a_headline_that_is_no_metric_name_is_refused_when_the_task_registers(fresh_tasks, headline) -> None:
    odd = type("Odd", (Task,), {"name": "odd_headline", "description": "d", "headline": headline})
    with pytest.raises(TypeError, match=r"`headline` names one of its metrics \(a str\) or is None"):
        register_task(odd)
    assert "odd_headline" not in fresh_tasks


def test_the_extending_guides_task_has_its_table_in_leaderboard_md(fresh_tasks, tmp_path: Path) -> None:
    """The guide's kind of task, run for real: its AUROC table is written and printed."""

    @register_task
    class LateNoise(Task):
        name = "late_noise"
        description = "detect labels flipped at 20 % (AUROC)"
        headline = "auroc"

        def settings(self, cfg, base_data, dataset):
            from dataclasses import replace

            from harness.runspec import Corruption

            c = Corruption(kind="noise", rate=0.2, seed=0)
            return [Setting(self.name, c.label(), replace(base_data, corruption=c), s) for s in cfg.seeds]

        def evaluate(self, ctx, scores):
            return detection_rows(ctx.data.positives, scores, ("auroc", "auprc"), ctx.resamples())

    out = tmp_path / "out"
    result = run_experiment(proxies="csl,final_loss", tasks="late_noise", seeds=1, epochs=2, executor="inprocess",
                            store=str(tmp_path / "store"), out=str(out), bootstrap=100, progress=False)
    md = (out / "leaderboard.md").read_text()
    assert _tables(md) == [("late_noise", "auroc")]
    board = result.leaderboard
    for proxy in ("csl", "final_loss"):
        mean = board[(board.proxy == proxy) & (board.metric == "auroc")]["mean"].item()
        line = next(line for line in md.splitlines() if line.startswith(f"| {proxy} "))
        assert float(re.search(r"(\d\.\d{3}) \[", line).group(1)) == pytest.approx(mean, abs=5e-4)
        assert 0.5 < mean <= 1.0 and np.isfinite(mean)
