"""Growing experiments on one store: a run stored by another experiment between this one's look at the
store and its claim of the run's entry keeps that experiment's recorders when this one adds its own."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_a_run_upgraded_without_a_plugin_recorder_trains_and_says_what_it_drops(make_config, fresh,
                                                                               monkeypatch) -> None:
    """A script registered a recorder and a proxy reading it and ran them on the store; a later
    experiment without that script adds final_loss's recorder to the same run. Asking for every
    recorder the entry held stopped it with "unknown recorder 'grow22_loss'", a recorder it never
    asked for. It trains the run with what it can record (csl's recorder kept, bitwise) and warns
    that the script's recorder is dropped."""
    from harness.recorders import RECORDERS, RecorderRequest
    from harness.recorders.train_pass import TrainLoss
    from proxies import Proxy

    class Grow22Loss(TrainLoss):
        name = "grow22_loss"

    class Grow22Proxy(Proxy):
        name = "grow22_proxy"
        description = "reads a recorder of its own"
        citation = "test"
        recorders = (RecorderRequest.of("grow22_loss"),)

        def score(self, ctx):
            return ctx.arrays(self.recorders[0])["loss"].sum(axis=0)

    monkeypatch.setitem(RECORDERS._items, "grow22_loss", Grow22Loss)
    fresh.register("grow22_proxy", Grow22Proxy)
    first = Experiment(make_config(proxies="csl,grow22_proxy", out=None, subset=300))
    first.run()
    (base,) = first.plan.runs
    stored = first.store.get(base)
    assert stored is not None and stored.recorders == {"train_loss", "grow22_loss"}
    csl_arrays = stored.arrays("train_loss")

    monkeypatch.delitem(RECORDERS._items, "grow22_loss")  # the script is not run this time
    with pytest.warns(UserWarning, match=r"1 stored run\(s\) \(digits noise=0.1 mlp seed0\) train again to add "
                                         r"recorders and lose their recorder\(s\) grow22_loss, which are not "
                                         "registered in this process"):
        result = Experiment(make_config(proxies="csl,final_loss", out=None, subset=300)).run()
    assert result.trained == [base.label()] and not result.failures
    after = first.store.get(base)
    assert after is not None and after.recorders == {"train_loss", EVAL_LAST.key}
    for name, values in csl_arrays.items():
        np.testing.assert_array_equal(after.arrays("train_loss")[name], values)


def test_a_run_another_experiment_holds_is_trained_after_it_with_the_union(make_config, monkeypatch) -> None:
    """how-it-works.md: two experiments that need one spec with different recorders each train it,
    the second, once it gets the entry's lock, with the union of both. B finds the entry's lock
    taken (A trains the run with csl's recorder and stores it meanwhile), waits for it, and trains
    the run with final_loss's recorder and csl's: it trained final_loss's alone, dropping A's."""
    import harness.runner as runner_module

    b = Experiment(make_config(proxies="final_loss", out=None, subset=300))
    done, todo = b.pending()
    a = Experiment(make_config(proxies="csl", out=None, subset=300))
    real = runner_module._acquire
    taken: list = []

    def acquire(lock, timeout: float = -1) -> None:
        if timeout == 0 and not taken:  # B's first try: A holds the lock, trains, stores, lets go
            taken.append(None)  # A's own tries take the lock as usual
            taken[0] = a.run()
            raise TimeoutError
        real(lock, timeout)

    monkeypatch.setattr(runner_module, "_acquire", acquire)
    ran = Runner(b.store, b.executor, b.plan.runs, b.jobs).run(done, todo)
    (base,) = b.plan.runs
    assert taken[0].trained == [base.label()]
    assert ran.trained == [base.label()]
    after = b.store.get(base)
    assert after is not None and after.recorders == {"train_loss", EVAL_LAST.key}


def test_folds_reused_from_another_engine_are_named(make_config, fresh, monkeypatch) -> None:
    """A plugin proxy recorded its own recorder on confident_learning's folds, which therefore trained
    alone (the single engine); confident_learning alone then reused them, though a fresh run trains
    its folds batched (the ensemble engine, equal to float rounding only), without a word."""
    from harness.recorders import RECORDERS, RecorderRequest
    from harness.recorders.train_pass import TrainLoss
    from proxies import Need, Proxy
    from proxies.confident_learning import ConfidentLearning

    class Grow22FoldLoss(TrainLoss):
        name = "grow22_fold_loss"

    class Grow22FoldProxy(Proxy):
        name = "grow22_fold_proxy"
        description = "records its own recorder on confident_learning's folds"
        citation = "test"

        def needs(self, base):
            request = RecorderRequest.of("grow22_fold_loss")
            return [Need(spec, frozenset({request, EVAL_LAST})) for spec in ConfidentLearning().fold_specs(base)]

        def score(self, ctx):
            return np.zeros(len(ctx.labels))

    monkeypatch.setitem(RECORDERS._items, "grow22_fold_loss", Grow22FoldLoss)
    fresh.register("grow22_fold_proxy", Grow22FoldProxy)
    first = Experiment(make_config(proxies="grow22_fold_proxy", out=None, subset=300)).run()
    assert len(first.trained) == 3
    second = Experiment(make_config(proxies="confident_learning", out=None, subset=300))
    with pytest.warns(UserWarning, match=r"^3 run\(s\) read from the store \(digits noise=0.1 mlp seed0 on=fold\d/3@0, "
                                         r"\.\.\.\) were trained in another engine than this experiment trains them"):
        done, todo = second.pending()
    assert len(done) == 3 and todo == []
    assert {run.manifest.engine for run in done.values()} == {"single"}
