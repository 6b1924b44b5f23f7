"""Confident learning: out-of-fold probabilities from stored fold runs, flags exactly cleanlab's,
flagged samples ranked above unflagged ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from cleanlab.filter import find_label_issues

from harness.config import ExperimentConfig
from harness.experiment import Experiment
from harness.presets import preset_for
from harness.runspec import TrainSubset
from harness.subsets import subset_indices
from proxies import ScoreContext
from proxies.confident_learning import confident_learning_scores


def _hand_probs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30 samples of 3 classes, confidently predicted as their label except samples 0, 10 and 20,
    confidently predicted as the next class: those are the label issues."""
    labels = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.7, 0.9, size=30)
    confidence[[0, 10, 20]] = 0.95  # above every class's mean self-confidence, cleanlab's threshold
    predicted = labels.copy()
    predicted[[0, 10, 20]] = (labels[[0, 10, 20]] + 1) % 3
    probs = np.tile(((1 - confidence) / 2)[:, None], (1, 3))
    probs[np.arange(30), predicted] = confidence
    return labels, probs, np.isin(np.arange(30), [0, 10, 20])


def test_hand_made_issues_are_flagged_and_ranked_first() -> None:
    labels, probs, issues = _hand_probs()
    scores, flags = confident_learning_scores(labels, probs)
    np.testing.assert_array_equal(flags, issues)
    np.testing.assert_array_equal(flags, find_label_issues(labels, probs, filter_by="confident_learning"))
    self_conf = probs[np.arange(30), labels]
    np.testing.assert_allclose(scores, issues + 1 - self_conf)
    assert scores[flags].min() > scores[~flags].max()
    for group in (flags, ~flags):  # within a group: lower self-confidence ranks higher
        order = np.argsort(-scores[group], kind="stable")
        np.testing.assert_array_equal(order, np.argsort(self_conf[group], kind="stable"))


def test_rejects_incomplete_probabilities() -> None:
    labels, probs, _ = _hand_probs()
    probs[3, 1] = np.nan
    with pytest.raises(Exception, match="complete"):
        confident_learning_scores(labels, probs)


def test_out_of_fold_on_stored_runs(tmp_path) -> None:
    recipe = replace(preset_for("quick", "digits").recipe, epochs=3)
    cfg = ExperimentConfig(
        dataset="digits",
        model="mlp",
        recipe=recipe,
        subset=600,
        seeds=(1,),
        tasks=("mislabeled",),
        proxies="confident_learning",
        noise_rates=(0.1,),
        device="cpu",
        out=tmp_path / "out",
        store=tmp_path / "store",
        progress=False,
        executor="inprocess",  # trained here: a pool's workers cost seconds of imports
    )
    exp = Experiment(cfg)
    ran = exp.execute()
    runs, failed, trained = ran.runs, ran.failed, ran.trained
    assert not failed and len(trained) == 3
    (proxy,) = exp.proxies
    (_, setting, base) = exp.plan.settings[0]
    data = exp.prepared(setting.data)
    ctx = ScoreContext(base, data.labels, data.num_classes, runs)
    pred_probs, source = proxy.out_of_fold(ctx)
    fold_specs = proxy.fold_specs(base)
    assert len(fold_specs) == 3 and set(source) == {0, 1, 2}

    # the model a sample's probabilities came from never trained on it (stored spec, not ours)
    for k, spec in enumerate(fold_specs):
        stored = exp.store.get(spec)
        trained_on = subset_indices(TrainSubset(**stored.manifest.spec["train_on"]), data.labels)
        got_k = np.flatnonzero(source == k)
        assert len(np.intersect1d(got_k, trained_on)) == 0
        assert len(got_k) + len(trained_on) == data.n
        np.testing.assert_array_equal(pred_probs[got_k], stored.arrays("eval_pass[epochs=last]")["probs_last"][got_k])

    # independent assembly: each sample from the one stored fold run that did not train on it
    independent = np.full((data.n, data.num_classes), np.nan)
    for spec in fold_specs:
        stored = exp.store.get(spec)
        held = np.setdiff1d(
            np.arange(data.n), subset_indices(TrainSubset(**stored.manifest.spec["train_on"]), data.labels)
        )
        assert np.isnan(independent[held]).all()
        independent[held] = stored.arrays("eval_pass[epochs=last]")["probs_last"][held]
    independent = independent / independent.sum(1, keepdims=True)
    flags = find_label_issues(data.labels, independent, filter_by="confident_learning")
    expected = flags + 1 - independent[np.arange(data.n), data.labels]
    scores = proxy.score(ctx)
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    assert flags.any() and scores[flags].min() >= scores[~flags].max()
