"""The suspects task's suggested label: of the classes other than the given one, the class of the
highest mean training-pass softmax (`harness.tasks.suspects_labels`), in every suspects CSV; a
stored run from before it is announced before it trains again, and `suspects.suggest=off` reuses
it as it is."""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from harness.corruption import symmetric_noise
from harness.experiment import Experiment
from harness.recorders.class_prob import SUGGEST, mean_probs
from harness.tasks import make_tasks
from harness.tasks.base import EvalContext
from harness.tasks.suspects import Suspects


def _flipped_digits(tmp_path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Digits with 10 % of the labels flipped as the mislabeled task flips them, written as a file
    the task knows nothing of; returns the dataset, the given and the true labels."""
    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)
    noisy, _ = symmetric_noise(digits.target, 10, 0.1, 0)
    np.savez(tmp_path / "flipped.npz", x=x, y=noisy)
    return f"npz:{tmp_path / 'flipped.npz'}", noisy, digits.target


def _other_best(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    masked = probs.copy()
    masked[np.arange(len(labels)), labels] = -1.0
    return masked.argmax(1)


def _check_suggested(table: pd.DataFrame, probs: np.ndarray, labels: np.ndarray) -> None:
    """The table's suggested columns are the rule applied to the mean softmax `probs` by hand."""
    np.testing.assert_array_equal(table["suggested"], _other_best(probs, labels))
    np.testing.assert_allclose(table["p_suggested"], probs[np.arange(len(labels)), table["suggested"]], rtol=1e-6)
    assert table["suggested_name"].astype(str).tolist() == [str(c) for c in table["suggested"]]


def _stored_probs(exp: Experiment, seed: int) -> np.ndarray:
    (base,) = [b for _, s, b in exp.plan.settings if s.seed == seed]
    return mean_probs(exp.store.get(base).arrays(SUGGEST.key))


@pytest.mark.slow  # ~10 s: ten epochs, so that the final model fits the flipped labels
def test_the_suggested_label_is_the_passs_most_probable_other_class_and_finds_true_labels(
        tmp_path: Path, make_config) -> None:
    dataset, given, true = _flipped_digits(tmp_path)
    cfg = make_config(tasks=("suspects",), dataset=dataset, epochs=10, lr=0.1,
                      task_args={"suspects": {"duplicates": "off"}})
    exp = Experiment(cfg)
    exp.run()
    table = pd.read_csv(Path(cfg.out) / "suspects" / "suspects_seed0.csv").set_index("index").sort_index()
    columns = list(table.columns)
    assert columns[columns.index("p_label") + 1:][:3] == ["suggested", "suggested_name", "p_suggested"]
    _check_suggested(table, _stored_probs(exp, 0), given)
    assert (table["suggested"] != table["label"]).all()  # the given label is what is in doubt
    flipped = given != true
    suggested_right = (table["suggested"].to_numpy() == true)[flipped].mean()
    predicted_right = (table["predicted"].to_numpy() == true)[flipped].mean()
    assert suggested_right >= 0.9 and suggested_right > predicted_right, (suggested_right, predicted_right)


def test_two_seeds_suggest_from_their_mean_softmax(make_config) -> None:
    cfg = make_config(tasks=("suspects",), seeds=(0, 1), task_args={"suspects": {"duplicates": "off"}})
    exp = Experiment(cfg)
    exp.run()
    combined = pd.read_csv(Path(cfg.out) / "suspects" / "suspects.csv").set_index("index").sort_index()
    columns = list(combined.columns)
    assert columns[columns.index("p_label") + 1:][:3] == ["suggested", "suggested_name", "p_suggested"]
    for seed in (0, 1):  # each seed's CSV: its own run's mean softmax
        table = pd.read_csv(Path(cfg.out) / "suspects" / f"suspects_seed{seed}.csv").set_index("index").sort_index()
        _check_suggested(table, _stored_probs(exp, seed), table["label"].to_numpy())
    _check_suggested(combined, (_stored_probs(exp, 0) + _stored_probs(exp, 1)) / 2, combined["label"].to_numpy())


def test_a_sample_never_presented_gets_no_suggestion() -> None:
    task = make_tasks(["suspects"])[0]
    assert isinstance(task, Suspects)
    dataset = SimpleNamespace(sample_names=None, classes=["cat", "dog", "ship"], is_tokens=False)
    ctx = SimpleNamespace(data=SimpleNamespace(n=2, labels=np.array([2, 0]), dataset=dataset))
    probs = np.array([[0.2, 0.7, 0.1], [np.nan, np.nan, np.nan]])
    table = Suspects.table(ctx, {"csl": np.array([0.5, 0.1])}, np.array([2, 0]), np.array([0.1, 0.8]), None, probs)
    assert table["suggested"].tolist()[0] == 1 and pd.isna(table["suggested"].tolist()[1])
    assert table["suggested_name"].iloc[0] == "dog" and pd.isna(table["suggested_name"].iloc[1])
    assert table["p_suggested"].iloc[0] == pytest.approx(0.7) and np.isnan(table["p_suggested"].iloc[1])


def test_the_combined_table_takes_the_suggestion_only_when_every_seed_has_one(tmp_path: Path) -> None:
    task = make_tasks(["suspects"])[0]
    assert isinstance(task, Suspects)
    base = {"index": [0, 1], "label": [0, 1], "p_label": [0.9, 0.2], "predicted": [0, 1], "csl": [1.0, 2.0]}
    task.by_seed = {0: pd.DataFrame(base), 1: pd.DataFrame(base)}
    task.probs_by_seed = {0: np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]]),
                          1: np.array([[0.6, 0.1, 0.3], [0.1, 0.2, 0.7]])}
    dataset = SimpleNamespace(classes=["cat", "dog", "ship"])
    ctx = SimpleNamespace(out=tmp_path, artifacts={}, tables={}, data=SimpleNamespace(dataset=dataset))
    ctx.keep_table = partial(EvalContext.keep_table, ctx)
    task.write_combined(ctx, "csl")
    table = pd.read_csv(tmp_path / "suspects" / "suspects.csv").set_index("index").sort_index()
    # sample 0 (label cat): mean [0.6, 0.2, 0.2], a tie of the others goes to the first; sample 1: [0.3, 0.2, 0.5]
    assert table["suggested"].tolist() == [1, 2] and table["suggested_name"].tolist() == ["dog", "ship"]
    np.testing.assert_allclose(table["p_suggested"], [0.2, 0.5])
    del task.probs_by_seed[1]  # a seed without the recorder: no suggestion rather than one seed's
    task.write_combined(ctx, "csl")
    assert "suggested" not in pd.read_csv(tmp_path / "suspects" / "suspects.csv").columns


def _retraining_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "suspects.suggest=off" in str(w.message)]


def test_a_stored_run_without_the_recorder_is_announced_or_reused_with_suggest_off(make_config) -> None:
    old = make_config(tasks=("suspects",), seeds=(0, 1),
                      task_args={"suspects": {"suggest": "off", "duplicates": "off"}})
    exp = Experiment(old)
    assert {r.key for r in next(iter(exp.plan.runs.values()))} == {"train_loss", "eval_pass[epochs=last]"}
    before = exp.run()  # as a store written before the suggested label existed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = Experiment(replace(old, out=None))
        _, todo = again.pending()
    assert todo == [] and _retraining_lines(caught) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upgraded = Experiment(make_config(tasks=("suspects",), seeds=(0, 1), out=None,
                                          task_args={"suspects": {"duplicates": "off"}}))
        _, todo = upgraded.pending()
    assert len(todo) == 2  # both seeds train again to add it, keeping what they recorded
    assert all({r.key for r in requests} >= {"train_loss", SUGGEST.key} for _, requests in todo)
    (line,) = _retraining_lines(caught)
    assert line.startswith(f"2 stored run(s) (digits clean mlp seed0, digits clean mlp seed1) lack recorder(s) "
                           f"{SUGGEST.key} (asked by task suspects): ")  # the planner's line (planner24)
    after = upgraded.run()  # its other signals recorded again: on this CPU, the numbers they had
    for seed in (0, 1):
        was, now = (result.tables[f"suspects/suspects_seed{seed}.csv"] for result in (before, after))
        assert was["csl"].tolist() == now["csl"].tolist() and was["p_label"].tolist() == now["p_label"].tolist()
        assert "suggested" not in was and now["suggested"].notna().all()
    fresh = Experiment(make_config(tasks=("suspects",), seeds=(0, 1), out=None, store=old.store.parent / "fresh"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.planner.plan(fresh.tasks, fresh.proxies)
    assert _retraining_lines(caught) == []  # nothing stored: nothing to announce


def test_suggest_takes_on_or_off() -> None:
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="suspects.suggest must be on or off, got 'yes'"):
        make_tasks(["suspects"], {"suspects": {"suggest": "yes"}})
