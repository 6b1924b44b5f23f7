"""attdig31: `python -m harness run` with a model plugin installed as a package (a dist-info on the path with an
entry point) that uses each digest31 read the way a project would: a config read by `CFG = get_config()`, a
module imported by `importlib.import_module`, a registry imported by name and filled by a decorator in another
module, a log the model appends to (`Path.open("a")`), a cache loaded from and saved to a file, a counter the run
bumps. Run twice in process and twice under the local executor, the model trains once and is reused after (at
59c4800 the second in-process run trained again: the log and the cache were read as data); an edit of the
config, of the registered class or of the imported module trains again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
import importlib
import json
import os
from pathlib import Path

import attdig31_blocks  # noqa: F401  fills REG at import
from attdig31_registry import REG
from torch import nn

from harness.model_registry import register_model
from harness.recorders import RecorderRequest
from harness.recorders.base import Recorder, register_recorder
from proxies import Proxy, register_proxy
from proxies.base import float64_record

HERE = Path(__file__).parent
CACHE_PATH = str(HERE / "cache31.json")


def get_config():
    with open(HERE / "cfg31.json") as f:
        return json.load(f)


CFG = get_config()
LOG = (HERE / "train31.log").open("a")
CACHE = json.load(open(CACHE_PATH)) if os.path.exists(CACHE_PATH) else {}


@register_model("attdig31_model", "attdig31")
def attdig31_model(input_shape, num_classes):
    c, h, w = input_shape
    width = CFG["hidden"] + importlib.import_module("attdig31_widths").W
    LOG.write(f"built {width} {REG['act'].slope}\\n")
    LOG.flush()
    CACHE[str(num_classes)] = width
    with open(CACHE_PATH, "w") as f:
        json.dump(CACHE, f)
    runs = HERE / "runs31.txt"
    runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.LeakyReLU(REG["act"].slope),
                         nn.Linear(width, num_classes))


@register_recorder
class Attdig31Norm(Recorder):
    name = "attdig31_norm"
    description = "attdig31"
    on_batches = True
    joins_batches = True
    repeatable = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.buffer("norm", (ctx.epochs, ctx.n), fill=float("nan"))

    def on_batch(self, epoch, idx, logits, loss, labels):
        _ = (CFG, CACHE)
        self.buffers["norm"][epoch].index_copy_(0, idx, logits.float().norm(dim=-1))


@register_proxy
class Attdig31Proxy(Proxy):
    name = "attdig31_proxy"
    description = "attdig31"
    citation = "attdig31"
    recorders = (RecorderRequest.of("attdig31_norm"),)

    def score(self, ctx):
        return float64_record(ctx.arrays(self.recorders[0])["norm"]).sum(axis=0)
'''
FILES = {
    "attdig31_plugin.py": PLUGIN,
    "attdig31_registry.py": "REG = {}\n\n\ndef register(name):\n    def deco(cls):\n        REG[name] = cls\n"
                            "        return cls\n    return deco\n",
    "attdig31_blocks.py": "from attdig31_registry import register\n\n\n@register('act')\nclass Act:\n    slope = 0.1\n",
    "attdig31_widths.py": "W = 8\n",
    "cfg31.json": '{"hidden": 16}\n',
    "attdig31plug-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: attdig31plug\nVersion: 0.1\n",
    "attdig31plug-0.1.dist-info/entry_points.txt": "[memprox.proxies]\n"
                                                   "attdig31_proxy = attdig31_plugin:Attdig31Proxy\n",
}


def _run(tmp_path: Path, executor: str) -> str:
    """One `python -m harness run` of the plugin's model on digits; its "runs: ..." line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "harness", "run", "--model", "attdig31_model", "--dataset", "digits",
               "--proxies", "attdig31_proxy", "--tasks", "mislabeled", "--noise-rates", "0.1", "--seeds", "1",
               "--epochs", "1", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--overwrite",
               "--no-progress", "--executor", executor, *(["--workers", "1"] if executor == "local" else [])]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path / "cwd")
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    return next(line for line in (out.stdout + out.stderr).splitlines() if line.startswith("runs:"))


@pytest.mark.slow
def test_a_plugin_using_each_read_is_reused_by_both_executors_and_its_edits_train_again(tmp_path) -> None:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "cwd").mkdir()
    once, reused = "runs: 1 trained, 0 reused from the store", "runs: 0 trained, 1 reused from the store"
    assert [_run(tmp_path, e) for e in ("inprocess", "inprocess", "local", "local")] == [once] + [reused] * 3
    assert (tmp_path / "runs31.txt").read_text() != "1"  # the run wrote its counter, cache and log each time
    for name, old, new in [("cfg31.json", "16", "24"), ("attdig31_blocks.py", "0.1", "0.2"),
                           ("attdig31_widths.py", "8", "4")]:
        (tmp_path / name).write_text(FILES[name].replace(old, new), encoding="utf-8")
        assert _run(tmp_path, "local") == once, name
