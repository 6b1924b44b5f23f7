"""The training loop and the planner: one base run per setting, determinism, the quick preset's
fit, non-finite runs, and batched augmentation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import harness.jobs as jobs
from harness.cli import main
from harness.errors import RunFailed
from harness.experiment import Experiment
from harness.presets import preset_for
from harness.recipe import random_crop_flip
from harness.recorders import RecorderRequest
from harness.runspec import TrainSubset
from harness.training import train_run

ISSUE2 = "csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability"
ISSUE2_RECORDERS = {"train_loss", "train_correct", "train_margin", "train_prob", "eval_pass[epochs=all]",
                    "eval_pass[epochs=last]"}


# --- planning --------------------------------------------------------------------------------


def test_all_issue2_proxies_share_one_base_run(make_config) -> None:
    exp = Experiment(make_config(proxies=ISSUE2))
    assert len(exp.plan.runs) == 1
    ((spec, requests),) = exp.plan.runs.items()
    assert spec == exp.base_spec(exp.plan.settings[0][1])
    assert spec.seed == 0 and spec.train_on == TrainSubset() and spec.then_on is None
    assert spec.data.corruption.kind == "noise" and spec.data.corruption.rate == 0.1
    assert {r.key for r in requests} == ISSUE2_RECORDERS
    result = exp.run()
    assert result.trained == [spec.label()] and result.failures == []
    assert set(result.raw["proxy"]) == set(ISSUE2.split(","))


def test_default_tasks_plan_one_run_per_corrupted_dataset(make_config) -> None:
    exp = Experiment(make_config(proxies=ISSUE2, tasks=("mislabeled", "duplicates", "cost")))
    kinds = sorted(spec.data.corruption.kind for spec in exp.plan.runs)
    assert kinds == ["duplicates", "noise"]  # cost reuses the mislabeled setting's run
    assert all(spec.seed == 0 and spec.train_on.kind == "all" for spec in exp.plan.runs)
    assert len(exp.plan.settings) == 3


def test_seeds_and_noise_rates_multiply_runs(make_config) -> None:
    exp = Experiment(make_config(proxies=ISSUE2, seeds=(0, 1), noise_rates=(0.05, 0.1)))
    assert len(exp.plan.runs) == 4
    assert {(s.seed, s.data.corruption.rate) for s in exp.plan.runs} == {(0, 0.05), (0, 0.1), (1, 0.05), (1, 0.1)}


# --- the loop ---------------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed(digits_noisy, base_spec) -> None:
    a = train_run(base_spec, digits_noisy, [], progress=False)
    b = train_run(base_spec, digits_noisy, [], progress=False)
    assert a.arrays == {} and len(a.history) == base_spec.recipe.epochs
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert (a.train_acc, a.test_acc) == (b.train_acc, b.test_acc)
    c = train_run(replace(base_spec, seed=1), digits_noisy, [], progress=False)
    assert [h["loss"] for h in c.history] != [h["loss"] for h in a.history]


def test_recorders_do_not_change_training(digits_noisy, base_spec) -> None:
    plain = train_run(base_spec, digits_noisy, [], progress=False)
    requests = [RecorderRequest.of("train_loss"), RecorderRequest.of("eval_pass", epochs="all")]
    recorded = train_run(base_spec, digits_noisy, requests, progress=False)
    assert [h["loss"] for h in recorded.history] == [h["loss"] for h in plain.history]
    # the training pass's mean recorded loss is exactly what the loop reports per epoch
    losses = recorded.arrays["train_loss"]["loss"]
    assert losses.shape == (base_spec.recipe.epochs, digits_noisy.n) and np.isfinite(losses).all()
    np.testing.assert_allclose(losses.mean(1), [h["loss"] for h in plain.history], rtol=1e-5)


def test_subset_run_records_only_its_samples(digits_noisy, base_spec) -> None:
    spec = base_spec.with_subset(TrainSubset(kind="half", index=0, count=2, seed=0))
    out = train_run(spec, digits_noisy, [RecorderRequest.of("train_loss")], progress=False)
    seen = np.isfinite(out.arrays["train_loss"]["loss"])
    assert (seen == seen[0]).all()  # the same samples every epoch
    assert abs(int(seen[0].sum()) - digits_noisy.n // 2) <= 10  # a stratified half
    assert out.history[0]["epoch"] == 1


def test_training_flops_match_the_mlp_by_hand(digits_noisy, base_spec) -> None:
    """FlopCounterMode on the 64-256-256-10 MLP: forward + weight grads + input grads of layers 2, 3."""
    out = train_run(base_spec, digits_noisy, [], progress=False)
    fwd = 2 * (64 * 256 + 256 * 256 + 256 * 10)
    per_sample = 2 * fwd + 2 * (256 * 256 + 256 * 10)
    assert out.train_flops == per_sample * digits_noisy.n * base_spec.recipe.epochs
    assert out.train_seconds > 0


def test_quick_preset_fits_noisy_digits(make_config) -> None:
    preset = preset_for("quick", "digits")
    exp = Experiment(make_config(recipe=preset.recipe, model=preset.model))
    result = exp.run()
    assert result.failures == []
    (spec,) = exp.plan.runs
    assert exp.store.get(spec).manifest.train_acc >= 0.95


def test_exploding_run_raises_run_failed_naming_the_run(digits_noisy, base_spec) -> None:
    spec = replace(base_spec, recipe=replace(base_spec.recipe, lr=1e6))
    with pytest.raises(RunFailed) as info:
        train_run(spec, digits_noisy, [RecorderRequest.of("train_loss")], progress=False)
    message = str(info.value)
    assert spec.label() in message and spec.digest() in message
    assert "non-finite" in message and "--lr" in message


def _fail_noise_10(monkeypatch) -> None:
    """Make the noise=0.1 run diverge for real (lr 1e6); every other run trains normally."""
    real = jobs.train_run

    def patched(spec, data, requests, **kw):
        if spec.data.corruption.rate == 0.1:
            spec = replace(spec, recipe=replace(spec.recipe, lr=1e6))
        return real(spec, data, requests, **kw)

    monkeypatch.setattr(jobs, "train_run", patched)


def test_a_failed_run_does_not_stop_the_others(make_config, monkeypatch) -> None:
    _fail_noise_10(monkeypatch)
    cfg = make_config(noise_rates=(0.05, 0.1), tasks=("mislabeled", "cost"), proxies="csl,aum")
    result = Experiment(cfg).run()
    assert len(result.trained) == 1 and "noise=0.05" in result.trained[0]
    assert any("noise=0.1" in f and "non-finite" in f for f in result.failures)
    skipped = {f.split()[1] for f in result.failures if f.startswith("proxy ") and "noise=0.1" in f}
    assert skipped == {"csl", "aum"}
    mislabeled = result.raw[result.raw.task == "mislabeled"]
    assert set(mislabeled.setting) == {"noise=0.05"}
    assert set(mislabeled.proxy) == {"csl", "aum"}
    board = pd.read_csv(cfg.out / "leaderboard.csv")
    assert set(board[board.task == "mislabeled"].setting) == {"noise=0.05"}
    assert (cfg.out / "summary.json").exists()


def test_cli_exits_1_when_a_run_fails(tmp_path, monkeypatch, capsys) -> None:
    _fail_noise_10(monkeypatch)
    out = tmp_path / "out"
    code = main(["run", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates", "0.05,0.1",
                 "--epochs", "2", "--device", "cpu", "--executor", "inprocess",  # the failure is patched in here
                 "--out", str(out), "--store", str(tmp_path / "store"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "failure(s)" in err
    assert "noise=0.1" in err
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board.setting) == {"noise=0.05"} and len(board) == 3  # auroc, auprc, precision_at_k


# --- augmentation ----------------------------------------------------------------------------


def test_random_crop_flip_equals_per_sample_crop_and_flip() -> None:
    b, c, h, w, pad = 7, 3, 10, 9, 3
    x = torch.randn(b, c, h, w)
    out = random_crop_flip(x, pad, torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(123)  # regenerate the same draws, in the same order
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    assert out.shape == x.shape
    for i in range(b):
        padded = nn.functional.pad(x[i], (pad, pad, pad, pad))
        want = padded[:, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        if flip[i]:
            want = want.flip(-1)
        torch.testing.assert_close(out[i], want, rtol=0, atol=0)


@pytest.mark.parametrize("engine", ["train_run", "train_ensemble"])
def test_augmentation_pads_the_raw_image_with_black(monkeypatch, tiny_recipe, engine: str) -> None:
    """methods.md: crop with padding 4 + flip, *then* normalize, so the border is black ((0 - mean) /
    std after normalizing), not 0 after normalizing (each channel's mean, a grey border)."""
    import harness.ensemble as ensemble
    import harness.training as training
    from harness.datasets import Dataset
    from harness.prepared import prepare
    from harness.runspec import DataSpec, RunSpec

    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (32, 3, 16, 16), generator=g, dtype=torch.uint8)  # no black pixel of its own
    y = torch.arange(32) % 2
    data = prepare(DataSpec(dataset="pixels"), Dataset("pixels", x, y, x[:4], y[:4], ("a", "b"), 32),
                   torch.device("cpu"))
    seen: list[torch.Tensor] = []

    def crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
        out = random_crop_flip(batch, padding, generator)
        seen.append(out)
        return out

    monkeypatch.setattr(training, "random_crop_flip", crop)
    monkeypatch.setattr(ensemble, "random_crop_flip", crop)
    spec = RunSpec(data.spec, "small_cnn", replace(tiny_recipe, epochs=1, batch_size=16, augment=True))
    if engine == "train_run":
        train_run(spec, data, [], progress=False)
    else:
        ensemble.train_ensemble([spec, replace(spec, seed=1)], data, [], progress=False)
    assert seen and all(batch.dtype == torch.uint8 for batch in seen)  # cropped before normalizing
    black = (seen[0] == 0).all(dim=1)  # (b, h, w): padding shows as pixels black in every channel
    assert black.any() and not (x == 0).any()


def test_random_crop_flip_draws_vary_and_padding_zero_only_flips() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    for seed in range(5):
        out = random_crop_flip(x, 0, torch.Generator().manual_seed(seed))
        for i in range(2):
            assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    outs = {random_crop_flip(x, 2, torch.Generator().manual_seed(s)).sum().item() for s in range(8)}
    assert len(outs) > 1
