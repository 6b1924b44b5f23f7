"""The share of flipped labels a noisy base run fits: the memorization-regime check printed after a
run and kept in summary.json, equal to an independent count from the stored last-epoch softmax."""

from __future__ import annotations

import json

import numpy as np

from harness.experiment import Experiment
from harness.recorders import EVAL_LAST
from harness.store import RunStore


def test_flipped_fit_is_the_share_of_flipped_samples_predicted_as_labelled(make_config) -> None:
    cfg = make_config(proxies="csl,final_loss", tasks=("mislabeled", "duplicates"), duplicate_pairs=20,
                      epochs=30, noise_rates=(0.2,))
    exp = Experiment(cfg)
    result = exp.run()
    ((_, _, base),) = [s for s in exp.plan.settings if s[0].name == "mislabeled"]
    run = RunStore(cfg.store).get(base)
    probs = run.arrays(EVAL_LAST.key)["probs_last"].reshape(-1, 10)
    scores = result.scores["noise=0.2_seed0"]
    flipped = scores.positive.to_numpy()
    want = float((probs.argmax(1) == scores.label.to_numpy())[flipped].mean())
    assert result.flipped_fit == {run.manifest.spec_hash: want}  # duplicates' runs are not flipped-label runs
    assert 0.0 < want < 1.0  # 30 epochs of the MLP fit some of the 20 % flipped labels, not all
    summary = json.loads((cfg.out / "summary.json").read_text())
    fits = {r["hash"]: r.get("flipped_fit") for r in summary["runs"]}
    assert fits[run.manifest.spec_hash] == want and sum(v is not None for v in fits.values()) == 1


def test_no_figure_without_a_last_epoch_eval_pass(make_config) -> None:
    result = Experiment(make_config(proxies="csl")).run()
    assert result.flipped_fit == {}
    assert np.isfinite(result.base_train_acc).all()


def test_the_cli_prints_it_after_the_training_accuracy(tmp_path, capsys) -> None:
    from harness.cli import main

    code = main(["run", "--proxies", "final_loss", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates", "0.2",
                 "--epochs", "3", "--executor", "inprocess", "--out", str(tmp_path / "out"),
                 "--store", str(tmp_path / "store"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0
    fit = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"][0]["flipped_fit"]
    assert f"share of the flipped labels the noisy base runs fit: mean {fit:.3f}, min {fit:.3f}" in err


def test_the_training_accuracy_counts_each_base_run_once(make_config) -> None:
    """Tasks share base runs (cost reads the first mislabeled setting's); the printed mean listed a base
    once per task, so with the default tasks the clean run weighed three or four times."""
    exp = Experiment(make_config(proxies="csl", tasks=("mislabeled", "cost"), noise_rates=(0.1,), epochs=3))
    result = exp.run()
    ((base,),) = {(b,) for _, _, b in exp.plan.settings}
    assert len(exp.plan.settings) == 2
    assert result.base_train_acc == [RunStore(exp.cfg.store).get(base).manifest.train_acc]
