"""The suspects task's notice that stored runs train again to add the suggested label (attack23):
a clean run stored today by the cost task lacks its recorder too, and the notice said it was
'stored before it existed'."""

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
    (line,) = [str(w.message) for w in caught if "suspects.suggest=off to reuse" in str(w.message)]
    assert "seed(s) 0 lack" in line
    assert "(stored before it existed, or by a run that did not record them: another task's, such as cost" in line
