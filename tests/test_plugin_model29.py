"""A model registered by an installed plugin's module (digestattack29): `--model` was checked before the
plugins were loaded, so `python -m harness run --model plugmlp29` said "unknown model" though
`python -m harness list` listed it; the model can be given on the command line only through a plugin."""

from __future__ import annotations

import pytest
from _plugin_entry import install_plugin

from harness.cli import main
from harness.models import MODELS

PLUGIN = '''
import numpy as np
from torch import nn

from harness.models import register_model
from proxies import Proxy, register_proxy


@register_model("plugmlp29", "a plugin's model")
def plugmlp29(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))


@register_proxy
class Zeros29(Proxy):
    name, description, citation = "zeros29", "d", "c"

    def score(self, ctx):
        return np.zeros(len(ctx.labels))
'''


@pytest.fixture
def plugin(monkeypatch, tmp_path, fresh):
    install_plugin(monkeypatch, tmp_path, "plugmodel29", PLUGIN, "zeros29", "Zeros29")
    yield
    if "plugmlp29" in MODELS:
        MODELS.remove("plugmlp29")


def test_a_plugins_model_is_known_to_run(plugin, tmp_path, capsys) -> None:
    code = main(["run", "--no-progress", "--model", "plugmlp29", "--proxies", "csl", "--tasks", "mislabeled",
                 "--seeds", "1", "--noise-rates", "0.1", "--epochs", "2", "--executor", "inprocess", "--threads", "1",
                 "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "· plugmlp29 ·" in out + err and "unknown model" not in err
    assert "plugmlp29" in (tmp_path / "out" / "summary.json").read_text()


def test_an_unknown_model_is_still_refused_with_the_plugins_listed(plugin, tmp_path, capsys) -> None:
    code = main(["run", "--no-progress", "--model", "plugmlp2", "--proxies", "csl", "--tasks", "mislabeled",
                 "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'plugmlp2'" in err and "did you mean 'plugmlp29'" in err
    assert not (tmp_path / "store" / "runs").exists()
