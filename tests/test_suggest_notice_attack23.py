"""The notice that stored runs train again to add the suggested label (attack23; the planner's line
for any recorder since planner24): a clean run stored today by the cost task lacks its recorder
too, and the notice said it was 'stored before it existed'."""

from __future__ import annotations

import warnings

from harness.experiment import Experiment


def test_a_run_stored_by_the_cost_task_is_announced_without_claiming_it_is_old(make_config) -> None:
    Experiment(make_config(tasks=("cost",), out=None)).run()  # the clean base run, without the recorder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = Experiment(make_config(tasks=("suspects",), out=None, task_args={"suspects": {"duplicates": "off"}}))
        _, todo = exp.pending()
    assert len(todo) == 1  # trained again to add it
    (line,) = [str(w.message) for w in caught if "train again" in str(w.message)]  # the planner's (planner24)
    assert line.startswith("1 stored run(s) (digits clean mlp seed0) lack recorder(s) eval_pass[epochs=last], "
                           "train_class_prob (asked by task suspects): ")
    assert "stored before the recorder existed, or by an experiment that did not ask for it" in line
    assert "suspects.suggest=off" not in line  # it lacks the last eval pass too, which suggest=off still asks for
