"""The planner: every proxy's needs become one set of distinct runs, recorders on a shared run are
merged, and a second experiment on the same store trains nothing."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from harness.config import ExperimentConfig
from harness.experiment import Experiment
from harness.presets import preset_for
from harness.recorders import RECORDERS


def _config(tmp_path) -> ExperimentConfig:
    return ExperimentConfig(
        dataset="digits",
        model="mlp",
        recipe=replace(preset_for("quick", "digits").recipe, epochs=3),
        seeds=(0,),
        tasks=("mislabeled",),
        proxies="all",
        noise_rates=(0.1,),
        device="cpu",
        out=tmp_path / "out",
        store=tmp_path / "store",
        progress=False,
        executor="inprocess",  # trained here: a pool's workers cost seconds of imports
    )


def _kind(spec) -> str:
    return spec.train_on.kind + ("" if spec.then_on is None else f"->{spec.then_on.kind}")


def test_plan_shares_runs_and_rerun_trains_nothing(tmp_path) -> None:
    exp = Experiment(_config(tmp_path))
    runs = exp.plan.runs
    assert Counter(_kind(s) for s in runs) == {"all": 1, "half->half": 2, "fold": 3}
    (_, _, base) = exp.plan.settings[0]
    assert base in runs and base.train_on.kind == "all" and base.then_on is None

    ssft = [s for s in runs if s.then_on is not None]
    assert {(s.train_on.index, s.then_on.index) for s in ssft} == {(0, 1), (1, 0)}
    assert all({r.key for r in runs[s]} == {"ssft_correct"} for s in ssft)
    folds = [s for s in runs if s.train_on.kind == "fold"]
    assert sorted(s.train_on.index for s in folds) == [0, 1, 2] and {s.train_on.count for s in folds} == {3}
    assert all({r.key for r in runs[s]} == {"eval_pass[epochs=last]"} for s in folds)

    # the base run carries the union of every proxy's recorders on it, each request once
    union = {r for p in exp.proxies for n in p.needs(base) if n.spec == base for r in n.recorders}
    assert runs[base] == union
    names = Counter(r.name for r in runs[base])
    assert {"train_loss", "train_correct", "train_margin", "train_prob", "eval_pass"} <= set(names)
    assert names["train_loss"] == names["train_correct"] == 1
    if "input_grads" in RECORDERS:  # loss_sensitivity, learning_time and csg share one pass
        assert names["input_grads"] == 1

    first = exp.run()
    assert not first.failures and len(first.trained) == 6 and first.reused == []
    again = Experiment(_config(tmp_path)).run()
    assert again.trained == [] and len(again.reused) == 6 and not again.failures
    assert again.raw.equals(first.raw)


def test_compile_says_that_ensemble_runs_stay_eager(make_config) -> None:
    """The ensemble engine does not compile its vmapped step: --compile was a silent no-op there."""
    exp = Experiment(make_config(compile=True, proxies="confident_learning"))  # its folds train as an ensemble
    _, todo = exp.pending()
    with pytest.warns(UserWarning, match="--compile applies to runs trained alone"):
        jobs = exp.jobs(todo)
    assert {j.engine for j in jobs} == {"ensemble"}


def test_a_last_batch_of_one_that_batch_norm_cannot_train_on_is_refused_before_training(make_config) -> None:
    """129 samples at batch size 64 leave one sample in the last batch; small_cnn's batch norm sees
    one value per channel at 8x8 inputs and failed with a traceback after the first epoch. The MLP
    (no batch norm) trains as before; a batch size that leaves more than one sample is taken."""
    from harness.errors import HarnessError

    cfg = make_config(model="small_cnn", subset=129, batch_size=64, epochs=1)
    with pytest.raises(HarnessError, match=r"trains 129 samples at batch size 64, so its last batch holds one "
                                           r"sample, and the batch norm of small_cnn cannot train on one sample "
                                           r"at 8x8 inputs; pass --batch-size 63"):
        Experiment(cfg)
    assert not cfg.store.exists()
    assert len(Experiment(make_config(model="mlp", subset=129, batch_size=64, epochs=1)).plan.runs) == 1
    assert len(Experiment(make_config(model="small_cnn", subset=129, batch_size=63, epochs=1)).plan.runs) == 1
