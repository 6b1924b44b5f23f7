"""up31: a model plugin trained by this morning's memprox (9b2283e), reused or trained again today.

Two plugin modules as docs/extending.md registers them. `up31_a` has the typical top-level statements
(logging.basicConfig, torch.manual_seed, a json config read at import, a constant): its digest is the one
9b2283e computed (pinned below, measured there), so its stored runs are reused after the upgrade. `up31_b`
reads a timm-like registry another module fills: 9b2283e did not read the fill, today's digest does, so its runs
train again once after the upgrade; the planner names them with the reason (tests/test_up31_upgrade.py checks
the notice end to end against a real 9b2283e store, slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.model_registry import MODELS, model_fingerprint
from tests.test_digest31_blind import _load

PLUGIN_A = '''"""A typical plugin: top-level seed, logging, a json config, a constant."""
import json
import logging
from pathlib import Path

import torch
from torch import nn

from harness.model_registry import register_model

logging.basicConfig(level=logging.WARNING)
torch.manual_seed(0)
HERE = Path(__file__).resolve().parent
CFG = json.load(open(HERE / "cfg31.json"))
HIDDEN = 32


@register_model("up31_a", "typical plugin")
def make(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, HIDDEN), nn.ReLU(), nn.Dropout(CFG["p"]),
                         nn.Linear(HIDDEN, num_classes))
'''
REG = '''"""timm-like registry filled by decorators in another module."""
_entrypoints = {}


def register(fn):
    _entrypoints[fn.__name__] = fn
    return fn
'''
NETS = '''from torch import nn

from up31_reg import register


@register
def wide(d, k):
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 48), nn.ReLU(), nn.Linear(48, k))
'''
PLUGIN_B = '''"""A plugin reading a timm-like registry another module fills."""
import up31_nets  # noqa: F401  (fills the registry)
from up31_reg import _entrypoints

from harness.model_registry import register_model


@register_model("up31_b", "timm-like registry")
def make(input_shape, num_classes):
    c, h, w = input_shape
    return _entrypoints["wide"](c * h * w, num_classes)
'''
FILES = {"up31_a.py": PLUGIN_A, "up31_reg.py": REG, "up31_nets.py": NETS, "up31_b.py": PLUGIN_B,
         "cfg31.json": '{"p": 0.0}\n'}
#: model_fingerprint at 9b2283e of these files (python -c under PYTHONPATH=<worktree at 9b2283e>:<folder>)
AT_9B2283E = {"up31_a": "5e147ff284204325", "up31_b": "81950df3ef3ebcfb"}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in AT_9B2283E:
        assert name not in MODELS
    _load(tmp_path, monkeypatch, FILES, "up31_a:make")
    _load(tmp_path, monkeypatch, {}, "up31_b:make")
    yield tmp_path
    for name in AT_9B2283E:
        MODELS.remove(name)


def test_a_typical_plugin_keeps_its_9b2283e_digest_and_a_filled_registry_plugin_gets_a_new_one(plugins) -> None:
    assert model_fingerprint("up31_a") == AT_9B2283E["up31_a"]  # its stored runs are reused
    assert model_fingerprint("up31_b") != AT_9B2283E["up31_b"]  # the fill is read now: trains again once
