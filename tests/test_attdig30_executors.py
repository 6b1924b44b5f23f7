"""attdig30: a user model and recorder using what the digest reads since digest30 (a module global array filled by
a run, an unseeded random tensor, sets of classes in a list and a class attribute, a module imported inside a
function, a module list filled by a loop, a top-level call through torch) train under --executor inprocess, then
under the local executor, whose fresh process computes the same keys: no refusal, and a rerun trains nothing.
At 4048737 the local executor refused both (`BUF`, `PROJ`, `NOISE` differed in a fresh process), and inprocess
trained the model again at every run (its digest changed as the run filled `BUF`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PLUGIN = '''
import numpy as np
import torch
from torch import nn
from harness.model_registry import register_model
from harness.recorders import RecorderRequest
from harness.recorders.base import Recorder, register_recorder
from proxies import Proxy, register_proxy
from proxies.base import float64_record

BUF = np.zeros(4)
PROJ = torch.randn(4, 4)
NOISE = np.random.rand(3)
LAYERS = []
for i in range(2):
    LAYERS.append(4 * (i + 1))
torch.set_num_threads(torch.get_num_threads())
class Block(nn.Module):
    pass
class Big(Block):
    pass
KINDS = [{Block, Big}]

@register_model("attdig30_model", "attdig30")
def attdig30_model(input_shape, num_classes):
    import attdig30_widths
    BUF[0] += 1
    c, h, w = input_shape
    _ = (PROJ, KINDS)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, LAYERS[0] + attdig30_widths.W), nn.ReLU(),
                         nn.Linear(LAYERS[0] + attdig30_widths.W, num_classes))

@register_recorder
class Attdig30Norm(Recorder):
    name = "attdig30_norm"
    description = "attdig30"
    on_batches = True
    joins_batches = True
    repeatable = True
    KINDS = {Block, Big}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.buffer("norm", (ctx.epochs, ctx.n), fill=float("nan"))

    def on_batch(self, epoch, idx, logits, loss, labels):
        import attdig30_widths
        _ = (NOISE, attdig30_widths.W)
        self.buffers["norm"][epoch].index_copy_(0, idx, logits.float().norm(dim=-1))

@register_proxy
class Attdig30Proxy(Proxy):
    name = "attdig30_proxy"
    description = "attdig30"
    citation = "attdig30"
    recorders = (RecorderRequest.of("attdig30_norm"),)

    def score(self, ctx):
        return float64_record(ctx.arrays(self.recorders[0])["norm"]).sum(axis=0)
'''

SCRIPT = '''
import sys
import attdig30_plugin
from harness import run_experiment
for executor, seeds in [("inprocess", 1), ("inprocess", 1), ("local", 2), ("local", 2)]:
    res = run_experiment(model="attdig30_model", dataset="digits", proxies="attdig30_proxy", tasks="mislabeled",
                         noise_rates=[0.1], seeds=seeds, epochs=1, executor=executor, store=sys.argv[1],
                         progress=False, **({"workers": 1} if executor == "local" else {}))
    print("TRAINED", len(res.trained))
'''


@pytest.mark.slow
def test_a_plugin_using_each_read_trains_under_both_executors_and_is_reused(tmp_path) -> None:
    (tmp_path / "attdig30_plugin.py").write_text(PLUGIN, encoding="utf-8")
    (tmp_path / "attdig30_widths.py").write_text("W = 8\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store")], env=env, capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line for line in out.stdout.splitlines() if line.startswith("TRAINED")] == \
        ["TRAINED 1", "TRAINED 0", "TRAINED 1", "TRAINED 0"]
