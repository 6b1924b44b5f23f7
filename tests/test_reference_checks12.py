"""Reference settings that cannot give a usable answer stop while planning (found by an audit of the
memorization and privacy numbers): a stability reference of 3 samples was scored (csl's Pearson
-0.76 [-0.88, -0.64], "worse than the best"), a `privacy.top` that flags every sample only warned
after training, `memorization.variant` with privacy alone was read by nothing, and the reference
models' own training accuracy was never shown."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.stability import subset_masks
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.store import RunStore
from harness.tasks import make_tasks
from harness.tasks.reference import MIN_REFERENCE_SAMPLES, ReferenceConfig


def _naive_coverage(n: int, k: int, fraction: float, seeds: tuple[int, ...]) -> tuple[int, int]:
    estimated, with_error = [], []
    for seed in seeds:
        masks = subset_masks(n, k, fraction, seed)
        ins = [int(masks[:, i].sum()) for i in range(n)]
        estimated.append(sum(1 for c in ins if c >= 1 and k - c >= 1))
        with_error.append(sum(1 for c in ins if c >= 2 and k - c >= 2))
    return min(estimated), min(with_error)


@pytest.mark.parametrize(("n", "k", "fraction", "seeds"), [
    (30, 3, 0.97, (0,)), (40, 4, 0.7, (0, 1, 2)), (1437, 2, 0.7, (0,)), (200, 16, 0.5, (3, 7)), (57, 5, 0.9, (1,)),
])
def test_coverage_counts_samples_with_an_estimate_and_with_a_standard_error(n, k, fraction, seeds) -> None:
    rc = ReferenceConfig(k=k, fraction=fraction)
    assert rc.covered(n, seeds) == _naive_coverage(n, k, fraction, seeds)


def _store_is_empty(cfg) -> bool:
    return not cfg.store.exists() or not any(p.is_file() for p in cfg.store.rglob("*"))


def test_a_reference_of_a_handful_of_samples_stops_before_training(make_config) -> None:
    cfg = make_config(tasks=("memorization", "privacy"), subset=30,
                      task_args={"memorization": {"k": 3, "fraction": 0.97}})
    estimated, _ = ReferenceConfig(k=3, fraction=0.97).covered(30, (0,))
    assert estimated < MIN_REFERENCE_SAMPLES
    with pytest.raises(HarnessError, match=rf"memorization.k=3 at fraction 0.97 of N=30 samples gives {estimated} "
                                           r"sample\(s\) a memorization estimate .* raise memorization.k"):
        Experiment(cfg)
    assert _store_is_empty(cfg)


def test_a_privacy_top_that_flags_every_sample_stops_before_training(make_config) -> None:
    cfg = make_config(tasks=("privacy",), subset=40, task_args={"memorization": {"k": 4}, "privacy": {"top": 0.99}})
    estimated, _ = ReferenceConfig(k=4).covered(40, (0,))
    with pytest.raises(HarnessError, match=rf"privacy.top 0.99 flags all {estimated} samples .* lower privacy.top"):
        Experiment(cfg)
    assert _store_is_empty(cfg)
    Experiment(make_config(tasks=("privacy",), subset=40, task_args={"memorization": {"k": 4}}))  # 0.1 is fine


def test_no_standard_error_at_all_is_said_while_planning(make_config) -> None:
    with pytest.warns(UserWarning, match=r"memorization.k=3: no sample has two models .* \(reference_mean_stderr\)"):
        Experiment(make_config(tasks=("memorization",), subset=100, task_args={"memorization": {"k": 3}}))


def test_a_reference_parameter_no_selected_task_reads_is_refused() -> None:
    with pytest.raises(HarnessError, match=r"memorization.variant .* none of the selected tasks \(privacy\)"):
        make_tasks(["privacy"], {"memorization": {"variant": "prob"}})
    for names in (["privacy", "theory"], ["privacy", "memorization"], ["memorization"]):  # read by one of them
        make_tasks(names, {"memorization": {"variant": "prob", "k": 4}})
    make_tasks(["privacy"], {"memorization": {"k": 4, "fraction": 0.5, "model": "mlp_small"}})


def test_the_reference_models_training_accuracy_is_reported(make_config) -> None:
    cfg = make_config(tasks=("memorization",), subset=120, bootstrap=0, task_args={"memorization": {"k": 4}})
    exp = Experiment(cfg)
    result = exp.run()
    specs = [s for task, _, base in exp.plan.settings for s in task.reference.specs(base)]
    assert len(result.reference_train_acc) == 4
    store = RunStore(cfg.store)
    expected = [store.get(s).manifest.train_acc for s in specs]
    np.testing.assert_array_equal(result.reference_train_acc, expected)
    assert all(0.0 <= a <= 1.0 for a in expected)
