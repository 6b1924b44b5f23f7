"""What a Python-API (notebook) walkthrough found: Ctrl-C during `run_experiment` raised an
`Interrupted` that a sweep's `except Exception: continue` swallowed, and a recorder defined in the
script failed every run inside the default executor's workers ("unknown recorder", a misleading
line: it is registered here) and returned an empty leaderboard instead of refusing before training."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError, Interrupted
from harness.experiment import Experiment
from harness.recorders import RECORDERS, RecorderRequest, register_recorder
from harness.recorders.train_pass import TrainLoss
from proxies import PROXIES, Proxy, ScoreContext, register_proxy


def test_interrupted_is_a_keyboard_interrupt_that_except_exception_lets_through() -> None:
    assert issubclass(Interrupted, KeyboardInterrupt) and not issubclass(Interrupted, Exception)
    with pytest.raises(Interrupted):
        try:
            raise Interrupted(3, 1)
        except Exception:  # a notebook sweep's guard
            pytest.fail("except Exception caught Ctrl-C")
    assert str(Interrupted(3, 1)).startswith("interrupted; 3 runs kept in the store and 1 partly trained run")


@register_recorder
class _ScriptLoss(TrainLoss):
    name = "script_loss12"


@register_proxy
class _ScriptProxy(Proxy):
    name = "script_proxy12"
    description = "reads a recorder this test module defines"
    citation = "test"
    recorders = (RecorderRequest.of("script_loss12"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return ctx.arrays(self.recorders[0])["loss"].sum(axis=0)


def test_a_script_recorder_is_refused_before_training_in_workers_and_runs_here(make_config) -> None:
    try:
        cfg = make_config(proxies="csl,script_proxy12", executor="local", workers=1)
        with pytest.raises(HarnessError, match=r"recorder 'script_loss12' is registered in this process only \(by "
                                               r"test_api_walkthrough12\).* executor='inprocess'"):
            Experiment(cfg).run()
        assert not cfg.store.exists() or not any(cfg.store.rglob("*.npz"))
        here = Experiment(make_config(proxies="csl,script_proxy12", bootstrap=0)).run()
        board = here.leaderboard
        assert not here.failures and {"csl", "script_proxy12"} <= set(board.proxy)
        np.testing.assert_allclose(here.scores["noise=0.1_seed0"]["script_proxy12"],
                                   here.scores["noise=0.1_seed0"]["csl"], rtol=1e-6)
    finally:
        del PROXIES._items["script_proxy12"], RECORDERS._items["script_loss12"]


@pytest.mark.parametrize(("task_args", "hint"), [
    ({"memorization": {"kk": 8}}, "(did you mean 'k'?)"),
    ({"memorisation": {"k": 8}}, "(did you mean 'memorization'?)"),
    ({"privacy": {"topp": 0.1}}, "(did you mean 'top'?)"),
])
def test_a_mistyped_task_parameter_or_task_gets_the_close_name(task_args, hint) -> None:
    from harness.tasks import make_tasks

    with pytest.raises(HarnessError) as raised:
        make_tasks(["memorization", "privacy"], task_args)
    assert hint in str(raised.value)
