"""Growing experiments on one store: a run stored by another experiment between this one's look at the
store and its claim of the run's entry keeps that experiment's recorders when this one adds its own."""

from __future__ import annotations

import numpy as np

from harness.experiment import Experiment
from harness.recorders import EVAL_LAST
from harness.runner import Runner


def test_a_run_stored_meanwhile_with_other_recorders_keeps_them(make_config) -> None:
    """B plans final_loss (the last eval pass) on an empty store; A stores the same base run with csl's
    recorder before B claims it. B trained the run with its own recorder alone and swapped that entry in:
    csl's arrays were gone (A, still scoring, failed reading them; the next csl experiment trained the
    run again). The entry keeps both, and csl's arrays are A's, bitwise: the seeds retrace the run."""
    b = Experiment(make_config(proxies="final_loss", out=None, subset=300))
    done, todo = b.pending()
    assert not done and len(todo) == 1
    a = Experiment(make_config(proxies="csl", out=None, subset=300))
    a.run()
    (base,) = b.plan.runs
    before = a.store.get(base)
    assert before is not None
    (csl_key,) = before.recorders
    csl_arrays = before.arrays(csl_key)

    ran = Runner(b.store, b.executor, b.plan.runs, b.jobs).run(done, todo)

    after = b.store.get(base)
    assert after is not None
    assert after.recorders == {csl_key, EVAL_LAST.key}
    assert ran.trained == [base.label()] and ran.reused == []
    for name, values in csl_arrays.items():
        np.testing.assert_array_equal(after.arrays(csl_key)[name], values)
