"""The code digest in normal use after today's changes (digest2_28), against a store written at f410fdc:

- the docs' model example, a class whose body sets literals only, and the example plugin's recorder keep
  their f410fdc digests, so their stored runs and arrays are reused;
- the classes that got a new digest once are the ones docs/extending.md lists; three cases were not
  listed there and now are: a class or function held as a class attribute (`act = nn.ReLU`, `block =
  Block`) and a class attribute computed from literals alone (`SCALE = 1 / math.sqrt(2)`);
- a user module of several classes is parsed whole once per process, not once per class per digest
  (f410fdc: `inspect.getsource` parsed it for each class: 12 parses for 4 digests of 3 classes), and
  each class's own text once per process (33fce50: again in each digest, and the planner digests the
  model once per run);
- a recorder's key was its digest when `@register_recorder` ran, before the rest of its module ran: a
  helper, a value or an attribute defined below the class was not in it (f410fdc too); the digest is
  now taken at the key's first use (`harness.recorders.base.recorder_digest`)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from test_digest_attack27 import _module

import harness
from harness.code_digest import code_digest
from harness.code_source import class_body

ROOT = Path(harness.__file__).resolve().parents[1]

NORMAL = '''
import math

from torch import nn

HIDDEN = 32


def tiny_mlp(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))


class Block(nn.Module):
    expansion = 1
    dropout = 0.1
    sizes = (64, 32)
    mode: str = "mean"

    def forward(self, x):
        return x


class WithActClass(nn.Module):
    act = nn.ReLU

    def forward(self, x):
        return self.act()(x)


class WithBlockClass(nn.Module):
    block = Block

    def forward(self, x):
        return self.block()(x)


class WithArithmetic(nn.Module):
    CHANNELS = 3 * 32
    SCALE = 1 / math.sqrt(2)

    def forward(self, x):
        return x * self.SCALE
'''

#: f410fdc's digests (computed there, in a worktree, from NORMAL in a module named normal2_28)
KEPT = {"tiny_mlp": "cd98e76d1d3bcf06", "Block": "a3e0a49408196871"}
NEW_ONCE = {"WithActClass": "a5a722e6624f6c31", "WithBlockClass": "1ab1143d0dad7ad1",
            "WithArithmetic": "adabf00456e70ac5"}



def test_normal_models_keep_f410fdc_digests_and_the_listed_ones_change(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "normal2_28", NORMAL)
    assert {name: code_digest(getattr(module, name)) for name in KEPT} == KEPT
    now = {name: code_digest(getattr(module, name)) for name in NEW_ONCE}
    assert all(now[name] != NEW_ONCE[name] for name in NEW_ONCE), now
    docs = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    assert "`act = nn.ReLU`" in docs and "`SCALE = 1 / math.sqrt(2)`" in docs  # the three listed as new once


def test_a_module_of_several_classes_is_parsed_once(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "parsed2_28", NORMAL + "\n\ndef make(i, n):\n"
                     "    return [WithActClass(), WithBlockClass(), WithArithmetic()]\n")
    text = (tmp_path / "parsed2_28.py").read_text(encoding="utf-8")
    whole = []
    parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda source, *a, **k: (whole.append(source == text), parse(source, *a, **k))[1])
    class_body.cache_clear()
    digests = {code_digest(module.make) for _ in range(4)}  # the planner digests the model once per run
    assert len(digests) == 1 and sum(whole) == 1  # f410fdc: 12 (3 classes, each parsed whole in each digest)
    assert len(whole) == 1 + 4  # and each of the 4 classes' own text once (33fce50: 21, again in each digest)


LATE = '''
from harness.recorders.base import Recorder, register_recorder


@register_recorder
class LateRec(Recorder):
    name = "late_rec2_28"
    description = "a recorder whose helper is defined below it"

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        helper(logits)


def helper(x):
    return x * FACTOR


FACTOR = 1.0
'''


def test_a_recorder_key_sees_a_helper_defined_below_its_class(tmp_path) -> None:
    (tmp_path / "late2_28.py").write_text(LATE, encoding="utf-8")
    script = ("import late2_28; from harness.recorders.base import recorder_digest; from harness.code_digest import "
              "code_digest; print(recorder_digest('late_rec2_28'), code_digest(late2_28.LateRec, 12))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    key, after_import = done.stdout.split()
    assert key == after_import  # the key reads helper() and FACTOR, so an edit of either records again


SCRIPT = '''
from pathlib import Path
from types import SimpleNamespace

from torch import nn

from harness.errors import HarnessError
from harness.model_registry import register_model
from harness.worker_imports import check_workers_know


@register_model("script2_28", "a model of a script edited while it runs")
def script_model(input_shape, num_classes):
    return nn.Linear(16, num_classes)


Path(__file__).write_text(Path(__file__).read_text().replace("nn.Linear(16,", "nn.Linear(32,"))
spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="script2_28")
try:
    check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=True, name="inprocess"))
except HarnessError as e:
    print(e)
'''


def test_a_script_edited_while_it_runs_is_told_to_run_again(tmp_path) -> None:
    """A model of a script (`__main__`) whose file was edited while it ran (a second run_experiment
    call) is refused under inprocess; the fix named was `importlib.reload(__main__)`, which cannot
    reload a script."""
    (tmp_path / "script2_28.py").write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(tmp_path / "script2_28.py")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "__main__ was edited since this process imported it (changed: script_model)" in done.stdout
    assert "importlib.reload" not in done.stdout and "run the script again" in done.stdout
