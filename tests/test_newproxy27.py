"""A researcher's own proxies, as docs/extending.md has them written: the plugin package in
examples/proxy_plugin installed (an entry point on the path) and run from the command line, and two
installed plugins claiming one proxy name, which used to leave the name to whichever entry point
sorted first (`--proxies top_loss` scored another package's class, with a warning only)."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from harness.code_digest import code_digest
from harness.errors import HarnessError
from proxies import registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "proxy_plugin"

MINE = '''
import numpy as np
from harness.recorders import RecorderRequest
from proxies import Proxy, register_proxy

LOSS = RecorderRequest.of("train_loss")


@register_proxy
class Extra(Proxy):
    name, description, citation, recorders = "extra_newproxy27", "mine too", "me", (LOSS,)

    def score(self, ctx):
        return np.asarray(ctx.arrays(LOSS)["loss"], dtype=float).sum(0)


@register_proxy
class TopLoss(Proxy):
    name, description, citation, recorders = "top_loss_newproxy27", "my top loss", "me", (LOSS,)
    defaults = {"k": 2}

    def score(self, ctx):
        return np.sort(np.asarray(ctx.arrays(LOSS)["loss"], dtype=float), axis=0)[-self.params["k"]:].mean(0)
'''

THEIRS = '''
import numpy as np
from harness.recorders import RecorderRequest
from proxies import Proxy


class OtherTop(Proxy):  # no decorator: the entry point registers it
    name, description, citation = "top_loss_newproxy27", "their top loss: minus the last loss", "them"
    recorders = (RecorderRequest.of("train_loss"),)

    def score(self, ctx):
        return -np.asarray(ctx.arrays(self.recorders[0])["loss"][-1], dtype=float)
'''


def _install_two(monkeypatch, tmp_path: Path, mine: str, theirs: str) -> None:
    """Two installed plugins, entry points `mine` and `theirs`, whose classes share one `name`."""
    for module, source in (("mine_newproxy27", MINE), ("theirs_newproxy27", THEIRS)):
        (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint(mine, "mine_newproxy27:TopLoss", registry.ENTRY_POINT_GROUP),
           importlib.metadata.EntryPoint(theirs, "theirs_newproxy27:OtherTop", registry.ENTRY_POINT_GROUP)]
    real, ours = importlib.metadata.entry_points, registry.ENTRY_POINT_GROUP
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: eps if group == ours else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


@pytest.mark.parametrize("mine, theirs", [("a_mine", "z_theirs"), ("z_mine", "a_theirs")])
def test_two_plugins_claiming_one_name_are_both_withheld(monkeypatch, tmp_path, fresh, mine, theirs) -> None:
    _install_two(monkeypatch, tmp_path, mine, theirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = registry.available_proxies()
    said = " ".join(str(w.message) for w in caught)
    assert "top_loss_newproxy27" not in available  # neither class: which one won followed the entry points' names
    assert "neither is used" in said
    with pytest.raises(HarnessError) as refused:
        registry.make_proxy("top_loss_newproxy27")
    assert "claimed by 2 installed plugins" in str(refused.value)
    assert "mine_newproxy27.TopLoss" in str(refused.value) and "theirs_newproxy27.OtherTop" in str(refused.value)
    with pytest.raises(HarnessError, match="claimed by 2 installed plugins"):
        registry.resolve_proxies("csl,top_loss_newproxy27")
    # my module imported in full when it loaded first (it keeps its other proxy), and failed when it came second
    assert ("extra_newproxy27" in available) == (mine < theirs)


def _install_example(tmp_path: Path) -> Path:
    """examples/proxy_plugin as `pip install --target` leaves it: the package and a dist-info whose
    entry points are the ones its pyproject.toml declares."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "my_proxies", site / "my_proxies", ignore=shutil.ignore_patterns("__pycache__"))
    text = (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib: Python 3.10 is supported
    (name,), (version,) = re.findall(r'^name = "(.+)"', text, re.M), re.findall(r'^version = "(.+)"', text, re.M)
    points = re.findall(r'^(\w+) = "(\w+\.\w+:\w+)"$', text.split('"memprox.proxies"]')[1], re.M)
    info = site / "my_proxies-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[memprox.proxies]\n" + "".join(f"{k} = {v}\n" for k, v in points),
                                           encoding="utf-8")
    assert len(points) == 3, points
    return site


def test_example_plugin_package_is_listed_scored_and_charged(tmp_path) -> None:
    site = _install_example(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MEMPROX_CACHE": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = tmp_path / "out"
    argv = ["run", "--proxies", "csl,loss_above_median,top_loss(k=3),grad_norm", "--tasks", "mislabeled,cost",
            "--noise-rates", "0.1", "--seeds", "1", "--epochs", "3", "--executor", "inprocess", "--bootstrap", "200",
            "--no-progress", "--out", str(out)]
    code = ("import sys; from harness.cli import main; assert main(['list']) == 0; print('=' * 9); "
            f"sys.exit(main({argv!r}))")  # `python -m harness list`, then `run`, in one process: imports cost seconds
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = done.stdout.split("=" * 9)[0]
    rows = {line.split()[0]: line for line in listed.splitlines() if line.strip()}
    assert {"loss_above_median", "top_loss", "grad_norm"} <= set(rows)
    assert "k=2" in rows["top_loss"]
    assert "warning" not in done.stderr
    board = pd.read_csv(out / "leaderboard.csv")
    auroc = board[board.metric == "auroc"].set_index("proxy")
    assert set(auroc.index) == {"csl", "loss_above_median", "top_loss(k=3)", "grad_norm"}
    assert (auroc.ci_low < auroc["mean"]).all() and (auroc["mean"] < auroc.ci_high).all()
    assert auroc.loc["grad_norm", "mean"] > 0.9 and auroc.loc["top_loss(k=3)", "mean"] > 0.9
    cost = board[board.task == "cost"].pivot_table(index="proxy", columns="metric", values="mean")
    # its recorder's softmax and norm are no matrix products, which is all torch's FLOP counter counts
    assert cost.loc["grad_norm", "flops"] == cost.loc["csl", "flops"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "grad_norm" in json.dumps(summary) and "my_proxies.own.GradNorm" in json.dumps(summary)


def _digest_of(tmp_path: Path, scale: str, factor: str) -> str:
    """The code digest of a recorder class whose module sets SCALE and whose base class multiplies by `factor`."""
    source = f'''
from harness.recorders.base import Recorder
SCALE = {scale}


class MyBase(Recorder):
    def on_batch(self, epoch, idx, logits, loss, labels):
        self.buffers["v"][epoch].index_copy_(0, idx, loss * {factor})


class Child(MyBase):
    name = "child_newproxy27"

    def scaled(self, loss):
        return loss * SCALE
'''
    module = f"digest_newproxy27_{scale.replace('.', '_')}_{factor}"
    (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        return code_digest(importlib.import_module(module).Child, 12)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)


@pytest.mark.parametrize("edit", ["module value", "base class"])
def test_a_recorder_edit_outside_its_class_changes_its_digest(tmp_path, edit) -> None:
    before = _digest_of(tmp_path, "1.0", "1")
    after = _digest_of(tmp_path, "2.0", "1") if edit == "module value" else _digest_of(tmp_path, "1.0", "2")
    assert before != after


def test_a_model_factory_reading_another_width_gets_another_digest(tmp_path) -> None:
    digests = []
    for hidden in (32, 256):
        module = f"factory_newproxy27_{hidden}"
        (tmp_path / f"{module}.py").write_text(f'''
from torch import nn
HIDDEN = {hidden}


def tiny(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, num_classes))
''', encoding="utf-8")
        sys.path.insert(0, str(tmp_path))
        try:
            digests.append(code_digest(importlib.import_module(module).tiny))
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop(module, None)
    assert digests[0] != digests[1]


RECORDER_TOO = '''
import numpy as np
from harness.recorders import RecorderRequest
from harness.recorders.base import Recorder, register_recorder
from proxies import Proxy, register_proxy


@register_recorder
class Shared(Recorder):
    name = "shared_newproxy27"


@register_proxy
class SharedProxy(Proxy):
    name, description, citation = "shared_newproxy27", "a proxy named like its recorder", "me"
    recorders = (RecorderRequest.of("shared_newproxy27"),)

    def score(self, ctx):
        return np.zeros(len(ctx.labels))
'''


def test_a_recorder_clash_leaves_a_proxy_of_that_name_alone(monkeypatch, tmp_path, fresh) -> None:
    """Plugin b's recorder takes the name of plugin a's recorder, which a's proxy shares: b fails to
    import, and a's proxy, which no other plugin claims, stays selectable."""
    from harness.recorders import base

    monkeypatch.setattr(base, "RECORDERS", base.Registry("recorder"))
    monkeypatch.setattr(base, "_DIGESTS", {})
    for module in ("a_newproxy27", "b_newproxy27"):
        (tmp_path / f"{module}.py").write_text(RECORDER_TOO, encoding="utf-8")
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint(m, f"{m}_newproxy27:SharedProxy", registry.ENTRY_POINT_GROUP) for m in "ab"]
    real, ours = importlib.metadata.entry_points, registry.ENTRY_POINT_GROUP
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: eps if group == ours else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        registry.load_plugins()
    assert registry.make_proxy("shared_newproxy27").__module__ == "a_newproxy27"
