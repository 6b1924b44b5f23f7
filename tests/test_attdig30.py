"""attdig30: a module global array, tensor or torch module made by code alone (`BUF = np.zeros(4)`,
`PROJ = torch.randn(8, 4)`, `LAZY = nn.LazyLinear(3)`) was hashed by its value since digest30: a run that
changed it in place gave another digest after the run than before it (and than a fresh process's, which the
executors refuse), and an unseeded random one was refused in every fresh process. Now hashed by its text.
Pinned too: such a global's edit, and its value where it is not made by code alone, still change the digest."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
from test_digest_attack27 import _module

from harness.code_digest import code_digest, settings_read

RUN_CHANGES = {
    "numpy buffer": ("import numpy as np\nBUF = np.zeros(4)\n", "BUF[0] += 1"),
    "torch buffer": ("import torch\nBUF = torch.zeros(4)\n", "BUF.add_(1)"),
    "lazy module": ("import torch\nfrom torch import nn\nBUF = nn.LazyLinear(3)\n", "BUF(torch.ones(1, 5))"),
}


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.mark.parametrize("case", list(RUN_CHANGES))
def test_a_global_a_run_changes_in_place_keeps_its_digest(tmp_path, monkeypatch, case) -> None:
    head, change = RUN_CHANGES[case]
    module = _module(tmp_path, monkeypatch, f"attdig30_run{list(RUN_CHANGES).index(case)}",
                     head + f"def build(s, n):\n    {change}\n    return BUF\n")
    before = code_digest(module.build)
    module.build(None, 10)
    assert code_digest(module.build) == before  # 4048737: another digest after the run


def test_an_unseeded_random_global_has_one_digest_in_every_process(tmp_path) -> None:
    (tmp_path / "attdig30_rand.py").write_text("import torch\nPROJ = torch.randn(8, 4)\n"
                                               "def build(s, n):\n    return PROJ\n", encoding="utf-8")
    script = ("import attdig30_rand\nfrom harness.code_digest import code_digest\n"
              "print(code_digest(attdig30_rand.build))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "PYTHONDONTWRITEBYTECODE": "1"}
    digests = {subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1  # 4048737: two (refused by the executors' fresh-process check)


def _pair(tmp_path, monkeypatch, name: str, source: str, old: str, new: str) -> list[str]:
    assert old in source
    return [code_digest(_module(tmp_path, monkeypatch, name, text).build)
            for text in (source, source.replace(old, new))]


EDITS = {  # the global `build` returns, its module's text, an edit
    "its text": ("BUF", "import numpy as np\nBUF = np.zeros(4)\n", "zeros(4)", "zeros(5)"),
    "a value it reads": ("BUF", "import numpy as np\nN = 4\nBUF = np.zeros(N)\n", "N = 4", "N = 5"),
    "a setting after it": ("ACT", "from torch import nn\nACT = nn.LeakyReLU(0.1)\nACT.negative_slope = 0.2\n",
                           "0.2", "0.3"),
    "an item set after it": ("BUF", "import numpy as np\nBUF = np.zeros(4)\nBUF[0] = 1\n", "= 1", "= 2"),
    "a torch module's text": ("ACT", "from torch import nn\nACT = nn.LeakyReLU(0.1)\n", "0.1", "0.2"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_an_edit_of_a_global_array_or_module_changes_the_digest(tmp_path, monkeypatch, case) -> None:
    name, head, old, new = EDITS[case]
    source = head + f"def build(s, n):\n    return {name}\n"
    before, after = _pair(tmp_path, monkeypatch, f"attdig30_edit{list(EDITS).index(case)}", source, old, new)
    assert before != after


def test_a_global_made_by_code_alone_is_named_by_its_text(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "attdig30_named", "import numpy as np\nBUF = np.zeros(4)\n"
                                                              "def build(s, n):\n    return BUF\n")
    assert settings_read(module.build) == {"attdig30_named.BUF": "written np.zeros(4)"}



SET_OF_CODE = """
class Block:
    def f(self):
        return 1
class Big(Block):
    def g(self):
        return 2
def relu_like(x):
    return x
def gelu_like(x):
    return relu_like(x) * 2
def f(s, n, kinds):
    return kinds
"""


class Ordered(set):
    """A set whose iteration order the test picks (a set of classes or functions iterates in the order of their
    ids, another in every process), of no user module, so the digest reads it as the set it is."""

    reverse = False

    def __iter__(self):
        items = sorted(set.__iter__(self), key=lambda v: v.__name__)
        return iter(items[::-1] if Ordered.reverse else items)


Ordered.__module__ = "collections"


@pytest.mark.parametrize("members", [("Block", "Big"), ("relu_like", "gelu_like")])
@pytest.mark.parametrize("holder", ["partial", "list in a class attribute", "class attribute"])
def test_a_set_of_code_has_one_digest_in_every_order(tmp_path, monkeypatch, members, holder) -> None:
    module = _module(tmp_path, monkeypatch, f"attdig30_setcode_{members[0]}_{holder.replace(' ', '_')}", SET_OF_CODE)
    held = Ordered(getattr(module, m) for m in members)
    if holder == "partial":
        obj: object = functools.partial(module.f, kinds=held)
    else:
        obj = type("Net", (), {"__module__": module.__name__, "KINDS": [held] if holder.startswith("list") else held})
    digests = []
    for reverse in (False, True):
        monkeypatch.setattr(Ordered, "reverse", reverse)
        digests.append(code_digest(obj))
    assert digests[0] == digests[1]  # 4048737: two (one member read as "" after the other's code read it)


PLAIN_SETS = """
import functools
def f(s, n, t): return t
class Net:
    T = {1, "a", None, 2.5, (1, "b"), float("nan")}
    L = [{"x", "y", 3}]
build = functools.partial(f, t=[set(f"s{i}" for i in range(1000)) | {1, None, (1, "a")}])
"""


def test_a_set_of_plain_values_keeps_its_digest(tmp_path, monkeypatch) -> None:
    """Pinned (as at 4048737): a set of plain values is read as before, in sorted order."""
    module = _module(tmp_path, monkeypatch, "attdig30_plainsets", PLAIN_SETS)
    assert (code_digest(module.build), code_digest(module.Net)) == ("f1414770d3274399", "17b4e3b975e7b7f6")


def test_a_global_read_by_its_text_and_edited_since_is_refused_in_process(tmp_path, monkeypatch) -> None:
    """Read by its text, the edit gives a new digest while this process holds the old array: under --executor
    inprocess the old array would train under the new text's key, so it is compared as a module list is."""
    from harness.code_digest import code_read
    from harness.code_source import edited_since_import
    module = _module(tmp_path, monkeypatch, "attdig30_editbuf", "import numpy as np\nBUF = np.zeros(4)\n"
                                                                "def build(s, n):\n    return BUF\n")
    before = code_digest(module.build)
    assert edited_since_import(code_read(module.build)) == []
    (tmp_path / "attdig30_editbuf.py").write_text("import numpy as np\nBUF = np.zeros(16)  # wider\n"
                                                  "def build(s, n):\n    return BUF\n", encoding="utf-8")
    assert code_digest(module.build) != before
    assert edited_since_import(code_read(module.build)) == ["BUF"]  # b3d5d66: [] (the old array trained)


def test_a_class_s_literal_set_has_one_digest_under_every_hash_seed(tmp_path) -> None:
    """`L = [{"x", "y", 3}]` was left out as the literal written, or hashed, by the order the set's repr gave it:
    under hash seeds 4 and 8 another digest, refused by the executors' fresh process."""
    (tmp_path / "attdig30_seeds.py").write_text(PLAIN_SETS, encoding="utf-8")
    script = ("import attdig30_seeds\nfrom harness.code_digest import code_digest\n"
              "print(code_digest(attdig30_seeds.Net))")
    digests = []
    for seed in ("1", "4", "8"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "PYTHONHASHSEED": seed,
               "PYTHONDONTWRITEBYTECODE": "1"}
        digests.append(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True).stdout.strip())
    assert digests == ["17b4e3b975e7b7f6"] * 3  # b3d5d66: c30341a7f5acb64e under seeds 4 and 8
