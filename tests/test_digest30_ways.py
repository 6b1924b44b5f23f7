"""Ten and more ways a user edits code that changes a model's results, each checked against the code digest
(digest30): an edit the digest misses serves the old model's stored runs as the edited one's. The ones caught
are pinned here (an edit changes the digest, a comment does not); of those, the top-level calls through an
installed module (`torch.set_default_dtype`, `torch.set_num_threads`, a monkeypatch of `nn.ReLU.forward`) and a
torch module held as a module global (`ACT = nn.LeakyReLU(0.1)`) failed at da3a1ae (equal digests); a dict read
from a data file by a call and a list another module fills failed at 9b2283e (digest31)."""

from __future__ import annotations

import sys

import pytest
from test_digest_attack27 import _module

from harness.code_digest import code_digest


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _digests(tmp_path, monkeypatch, files: dict[str, str], old: str, new: str, target: str, first: str = "") -> list:
    """The digest of `target` ("module:attribute") with `files` written as given, with `old` -> `new` in them, and
    with a comment appended to each; each time every module imported afresh (`first` imported before the target)."""
    found = []
    for edit in (lambda t: t, lambda t: t.replace(old, new), lambda t: t + "\n# a comment\n" if t[:1] != "{" else t):
        assert any(old in text for text in files.values())
        for name, text in files.items():
            (tmp_path / name).write_text(edit(text), encoding="utf-8")
            monkeypatch.delitem(sys.modules, name.rpartition(".")[0], raising=False)
        name, attribute = target.split(":")
        monkeypatch.chdir(tmp_path)
        module = _module(tmp_path, monkeypatch, name, (tmp_path / f"{name}.py").read_text())
        if first:  # it changes `module` as it runs
            _module(tmp_path, monkeypatch, first, (tmp_path / f"{first}.py").read_text())
        found.append(code_digest(getattr(module, attribute)))
    return found


CAUGHT = {
    "a helper's default argument": ({"h30a.py": "def make(width=8):\n    return width\n",
                                     "n30a.py": "import h30a\ndef build(s, n):\n    return h30a.make()\n"},
                                    "width=8", "width=16", "n30a:build", ""),
    "a class attribute another module sets": ({"o30b.py": "import n30b\nn30b.Net.W = 8\n",
                                               "n30b.py": "class Net:\n    def f(self):\n        return self.W\n"},
                                              "W = 8", "W = 16", "n30b:Net", "o30b"),
    "an enum value of another module": ({"a30c.py": "import enum\nclass Act(enum.Enum):\n    RELU = 1\n",
                                         "n30c.py": "from a30c import Act\n"
                                                    "def build(s, n):\n    return Act.RELU.value\n"},
                                        "RELU = 1", "RELU = 3", "n30c:build", ""),
    "a dataclass field's default factory": ({"c30d.py": "import dataclasses\n@dataclasses.dataclass\nclass Cfg:\n"
                                                        "    w: list = dataclasses.field(\n"
                                                        "default_factory=lambda: [8])\n",
                                             "n30d.py": "from c30d import Cfg\ndef build(s, n):\n    return Cfg().w\n"},
                                            "[8]", "[16]", "n30d:build", ""),
    "a number read from a .json at import": ({"c30e.json": '{"w": 8}', "n30e.py": "import json\n"
                                              "W = json.load(open('c30e.json'))['w']\n"
                                              "def build(s, n):\n    return W\n"},
                                             '"w": 8', '"w": 16', "n30e:build", ""),
    "a torch.nn.init call in a helper": ({"i30f.py": "from torch import nn\ndef init(m):\n"
                                                     "    nn.init.normal_(m.weight, std=0.02)\n",
                                          "n30f.py": "import i30f\ndef build(s, n):\n    return i30f.init\n"},
                                         "0.02", "0.1", "n30f:build", ""),
    "a lambda in a dict": ({"n30g.py": "ACTS = {'a': lambda x: x * 2}\ndef build(s, n):\n    return ACTS['a'](n)\n"},
                           "x * 2", "x * 3", "n30g:build", ""),
    "a global another module changes": ({"o30h.py": "import n30h\nn30h.SCALE = 2\n",
                                         "n30h.py": "SCALE = 1\ndef build(s, n):\n    return SCALE\n"},
                                        "SCALE = 2", "SCALE = 3", "n30h:build", "o30h"),
    "a method's keyword default": ({"n30i.py": "BASE = 2\nclass Net:\n    def f(self, x, *, scale=BASE * 4):\n"
                                               "        return x * scale\n"}, "BASE = 2", "BASE = 3", "n30i:Net", ""),
    "a global a function called at import sets": ({"n30j.py": "SCALE = 1\ndef setup():\n"
                                                              "    global SCALE\n    SCALE = 2\n"
                                                              "setup()\ndef build(s, n):\n    return SCALE\n"},
                                                  "SCALE = 2", "SCALE = 3", "n30j:build", ""),
    "torch.set_default_dtype at import": ({"n30k.py": "import torch\ntorch.set_default_dtype(torch.float32)\n"
                                                      "def build(s, n):\n    return torch.nn.Linear(2, n)\n"},
                                          "torch.float32)", "torch.get_default_dtype())", "n30k:build", ""),
    "a torch setting at import": ({"n30l.py": "import torch\ntorch.set_num_threads(torch.get_num_threads())\n"
                                              "def build(s, n):\n    return torch.nn.Linear(2, n)\n"},
                                  "set_num_threads(torch.get_num_threads())",
                                  "use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled())",
                                  "n30l:build", ""),
    "a monkeypatch of an installed class": ({"n30m.py": "from torch import nn\nfrom torch.nn import ReLU\n"
                                                        "nn.ReLU.forward = ReLU.forward\n"
                                                        "def build(s, n):\n    return nn.ReLU()\n"},
                                            "ReLU.forward\n", "ReLU.extra_repr\n", "n30m:build", ""),
    "a torch module as a module global": ({"n30n.py": "from torch import nn\nACT = nn.LeakyReLU(0.1)\n"
                                                      "def build(s, n):\n"
                                                      "    return nn.Sequential(nn.Linear(2, n), ACT)\n"},
                                          "0.1", "0.2", "n30n:build", ""),
    "a dict read from a .json at import": ({"c30x.json": '{"w": 8}', "n30x.py": "import json\n"
                                            "CFG = json.load(open('c30x.json'))\n"
                                            "def build(s, n):\n    return CFG['w']\n"},
                                           '"w": 8', '"w": 16', "n30x:build", ""),
    "a list another module fills": ({"o30y.py": "import n30y\nn30y.W.append(8)\n",
                                     "n30y.py": "W = []\ndef build(s, n):\n    return W\n"},
                                    "append(8)", "append(16)", "n30y:build", "o30y"),
}


@pytest.mark.parametrize("case", list(CAUGHT))
def test_an_edit_that_changes_results_changes_the_digest(tmp_path, monkeypatch, case) -> None:
    import torch

    files, old, new, target, first = CAUGHT[case]
    monkeypatch.setattr(torch.nn.ReLU, "forward", torch.nn.ReLU.forward)  # n30m's modules replace it
    dtype = torch.get_default_dtype()
    try:
        before, edited, commented = _digests(tmp_path, monkeypatch, files, old, new, target, first)
    finally:  # n30k's set it; later tests in this process must not train under it (ReLU broke test_worker_keys27)
        torch.set_default_dtype(dtype)
    assert before != edited
    assert before == commented
