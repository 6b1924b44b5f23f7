"""A recorder, proxy and model that a user's module (or a plugin package) registers when imported
train under the default local executor: each job names the module and its worker imports it. They
were refused ("registered in this process only", by any module but memprox's), so a new signal
needed memprox itself edited. A module that registers only when a function runs is still refused,
after a fresh interpreter checked it. A recorder from outside memprox carries its code's digest in
its key: an edited one records again instead of serving its predecessor's arrays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

MODULE = '''
import numpy as np
from torch import nn

from harness.model_registry import register_model
from harness.models import build_model
from harness.recorders import RecorderRequest, register_recorder
from harness.recorders.train_pass import TrainLoss
from proxies import Proxy, ScoreContext, register_proxy


@register_recorder
class UserLoss(TrainLoss):
    name = "user_loss"  # SCALE


@register_proxy
class UserProxy(Proxy):
    name = "user_proxy"
    description = "reads a recorder of this module"
    citation = "test"
    recorders = (RecorderRequest.of("user_loss"),)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return ctx.arrays(self.recorders[0])["loss"].sum(axis=0)


@register_model("user_mlp", "the mlp under another name")
def user_mlp(input_shape, num_classes: int) -> nn.Module:
    return build_model("mlp", input_shape, num_classes)


def register_late():
    @register_recorder
    class LateLoss(TrainLoss):
        name = "late_loss_rec"
'''

SCRIPT = '''
import numpy as np
import userlib
from harness.api import run_experiment
from harness.errors import HarnessError

common = dict(proxies="csl,user_proxy", tasks="mislabeled", noise_rates=[0.1], seeds=1, epochs=2, subset=150,
              bootstrap=0, model="user_mlp", progress=False)
pool = run_experiment(executor="local", workers=1, **common)
here = run_experiment(executor="inprocess", store="other_store", **common)
a, b = pool.scores["noise=0.1_seed0"], here.scores["noise=0.1_seed0"]
print("FAILURES:", pool.failures, here.failures)
print("TRAINED:", len(pool.trained), len(here.trained))
print("SAME:", bool(np.array_equal(a["user_proxy"], b["user_proxy"])), bool(np.array_equal(a["csl"], b["csl"])))
print("EQUALS_CSL:", bool(np.allclose(a["user_proxy"], a["csl"], rtol=1e-6)))
'''


def _run(tmp_path, script: str) -> str:
    (tmp_path / "run.py").write_text(textwrap.dedent(script))
    env = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_users_module_registers_in_the_workers_too(tmp_path) -> None:
    (tmp_path / "userlib.py").write_text(MODULE)
    out = _run(tmp_path, SCRIPT)
    assert "FAILURES: [] []" in out and "TRAINED: 1 1" in out
    assert "SAME: True True" in out and "EQUALS_CSL: True" in out  # the worker's run is the in-process run


def test_a_registration_made_by_a_function_is_refused_and_an_edit_records_again(tmp_path) -> None:
    (tmp_path / "userlib.py").write_text(MODULE)
    out = _run(tmp_path, '''
        import userlib
        from harness.api import run_experiment
        from harness.errors import HarnessError
        from harness.recorders import RecorderRequest
        from harness.recorders.train_pass import TrainLoss
        from proxies import Proxy, register_proxy

        userlib.register_late()

        @register_proxy
        class Late(Proxy):
            name, description, citation = "late_proxy", "d", "c"
            recorders = (RecorderRequest.of("late_loss_rec"),)

            def score(self, ctx):
                return ctx.arrays(self.recorders[0])["loss"].sum(axis=0)

        try:
            run_experiment(proxies="late_proxy", tasks="mislabeled", noise_rates=[0.1], seeds=1, epochs=1, subset=150,
                           bootstrap=0, executor="local", workers=1, progress=False)
            print("NOT REFUSED")
        except HarnessError as e:
            print("REFUSED:", e)
        print("KEY:", RecorderRequest.of("user_loss").key)
    ''')
    assert ("REFUSED: recorder 'late_loss_rec' is registered in this process only (by userlib, which does not "
            "register it when imported)") in out
    first = next(line for line in out.splitlines() if line.startswith("KEY:"))
    assert first.startswith("KEY: user_loss@code-") and len(first) == len("KEY: user_loss@code-") + 12
    (tmp_path / "userlib.py").write_text(MODULE.replace("# SCALE", "# edited"))
    again = _run(tmp_path, 'from harness.recorders import RecorderRequest\nimport userlib\n'
                           'print("KEY:", RecorderRequest.of("user_loss").key)\n')
    assert again.strip().startswith("KEY: user_loss@code-") and again.strip() != first  # another key: recorded again
