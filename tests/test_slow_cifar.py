"""End-to-end on the offline CIFAR-10 copy with the quick CPU preset (~10 minutes on 2 cores).

Marked `slow`: run with `python -m pytest -m slow`. It checks the claims the committed
`results/cifar10-subset-cpu` rests on: the preset reaches the memorization regime (>= 95 % training
accuracy on the noisy labels) and, there, CSL separates mislabeled samples better than final loss.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from harness.config import ExperimentConfig
from harness.experiment import Experiment
from harness.presets import preset_for

CIFAR = Path(os.environ.get("MEMPROX_CIFAR10_DIR", Path(__file__).resolve().parents[2] / "shared/data/cifar10"))


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason=f"offline CIFAR-10 copy not found at {CIFAR}")
def test_quick_preset_memorizes_and_csl_beats_final_loss(tmp_path) -> None:
    dataset = f"imagefolder:{CIFAR}"
    preset = preset_for("quick", dataset)
    cfg = ExperimentConfig(
        dataset=dataset, model=preset.model, recipe=replace(preset.recipe), subset=preset.subset,
        seeds=(0,), tasks=("mislabeled",), proxies="csl,final_loss", noise_rates=(0.1,),
        out=tmp_path / "out", store=tmp_path / "store", progress=False,
    )
    result = Experiment(cfg).run()
    assert min(result.base_train_acc) >= 0.95
    board = result.leaderboard.set_index(["proxy", "metric"])["mean"]
    assert board[("csl", "auroc")] > 0.85
    assert board[("csl", "auroc")] > board[("final_loss", "auroc")] + 0.05
    assert isinstance(result.raw, pd.DataFrame) and not result.failures


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason=f"offline CIFAR-10 copy not found at {CIFAR}")
def test_cpu_full_preset_on_a_1000_image_slice(tmp_path) -> None:
    """The cpu-full preset end to end on 1,000 images for one epoch, in the local worker pool: the
    recipe the full-size results were made with trains channels-last with augmentation, and every
    proxy of the full-size mislabeled experiment gives a finite score per sample."""
    dataset = f"imagefolder:{CIFAR}"
    preset = preset_for("cpu-full", dataset)
    assert preset.model == "resnet9_quarter" and preset.subset is None
    assert preset.recipe.channels_last and preset.recipe.augment and preset.recipe.batch_size == 128
    cfg = ExperimentConfig(
        dataset=dataset, model=preset.model, recipe=replace(preset.recipe, epochs=1), subset=1000,
        seeds=(0,), tasks=("mislabeled",), noise_rates=(0.1,), executor="local",
        proxies="csl,csl_eval,final_loss,aum,el2n,loss_sensitivity,csg,curvature",
        proxy_args={"loss_sensitivity": {"every": 2}, "csg": {"every": 2}, "curvature": {"n": 2, "every": 5}},
        out=tmp_path / "out", store=tmp_path / "store", progress=False,
    )
    result = Experiment(cfg).run()
    assert not result.failures and len(result.trained) == 1
    (scores,) = result.scores.values()
    wanted = ["csl", "csl_eval", "final_loss", "aum", "el2n", "loss_sensitivity(every=2)", "csg(every=2)",
              "curvature(every=5,n=2)"]
    assert len(scores) == 1000 and set(wanted) <= set(scores.columns), list(scores.columns)
    assert scores[wanted].notna().all().all()
    assert result.leaderboard.query("metric == 'auroc'")["mean"].between(0, 1).all()
