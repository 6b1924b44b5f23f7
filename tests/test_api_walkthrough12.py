"""What a Python-API (notebook) walkthrough found: Ctrl-C during `run_experiment` raised an
`Interrupted` that a sweep's `except Exception: continue` swallowed, and a recorder defined in the
script failed every run inside the default executor's workers ("unknown recorder", a misleading
line: it is registered here) and returned an empty leaderboard instead of refusing before training."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError, Interrupted


def test_interrupted_is_a_keyboard_interrupt_that_except_exception_lets_through() -> None:
    assert issubclass(Interrupted, KeyboardInterrupt) and not issubclass(Interrupted, Exception)
    with pytest.raises(Interrupted):
        try:
            raise Interrupted(3, 1)
        except Exception:  # a notebook sweep's guard
            pytest.fail("except Exception caught Ctrl-C")
    assert str(Interrupted(3, 1)).startswith("interrupted; 3 runs kept in the store and 1 partly trained run")


SCRIPT = """
import numpy as np
from harness import run_experiment
from harness.errors import HarnessError
from harness.recorders import RecorderRequest, register_recorder
from harness.recorders.train_pass import TrainLoss
from proxies import Proxy, ScoreContext, register_proxy


@register_recorder
class ScriptLoss(TrainLoss):
    name = "script_loss"


@register_proxy
class ScriptProxy(Proxy):
    name = "script_proxy"
    description = "reads a recorder this script defines"
    citation = "test"
    recorders = (RecorderRequest.of("script_loss"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return ctx.arrays(self.recorders[0])["loss"].sum(axis=0)


common = dict(proxies="csl,script_proxy", tasks="mislabeled", noise_rates=[0.1], seeds=1, epochs=2, subset=150,
              bootstrap=0, out=None)
try:
    run_experiment(executor="local", workers=1, **common)
    print("NOT REFUSED")
except HarnessError as e:
    print("REFUSED:", e)
result = run_experiment(executor="inprocess", **common)
scores = result.scores["noise=0.1_seed0"]
print("FAILURES:", result.failures)
print("SAME:", bool(np.allclose(scores["script_proxy"], scores["csl"], rtol=1e-6)))
"""


def test_a_script_recorder_is_refused_before_training_in_workers_and_runs_here(tmp_path) -> None:
    """As a user's script: the recorder and the proxy live in __main__ (a subprocess, so that no
    registry of the test process keeps them)."""
    import os
    import subprocess
    import sys

    (tmp_path / "script.py").write_text(SCRIPT)
    env = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert ("REFUSED: recorder 'script_loss' is registered in this process only (by __main__, which a fresh process "
            "cannot import)") in out
    assert out.count("executor='inprocess'") == 1 and "NOT REFUSED" not in out  # the hint once, in keywords
    assert "FAILURES: []" in out and "SAME: True" in out


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
