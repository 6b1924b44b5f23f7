"""Class attributes the digest hashed as nothing at 7811059 (digestattack28): each template below kept
one digest when the module value it reads changed, so the old model's runs were served as the new
one's. Now a torch dtype or device, a compiled pattern, a path, a typing generic by its repr, a
dataclass instance by its fields, another instance by its type, and a public attribute set outside the
class body (a class decorator, `Net.width = W` after it). Digests stay the same in every process."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness
from harness.code_digest import code_digest

CASES = {
    "a dtype": ("import torch\nDT = torch.VALUE\nclass Net:\n    dt = DT\n", "float32", "float64"),
    "a device": ("import torch\nDEV = torch.device('VALUE')\nclass Net:\n    dev = DEV\n", "cpu", "meta"),
    "a pattern": ("import re\nP = 'VALUE'\nclass Net:\n    pat = re.compile(P)\n", "a+", "b+"),
    "a path": ("import pathlib\nR = 'VALUE'\nclass Net:\n    root = pathlib.Path(R)\n", "/a", "/b"),
    "a generic": ("T = VALUE\nclass Net:\n    kind = list[T]\n", "int", "float"),
    "a dataclass instance": ("import dataclasses\n@dataclasses.dataclass\nclass Cfg:\n    w: int = 1\nW = VALUE\n"
                             "class Net:\n    cfg = Cfg(W)\n", "1", "2"),
    "an instance of a class read from the module": ("from torch import nn\nACT = nn.VALUE\nclass Net:\n"
                                                     "    act = ACT()\n", "ReLU", "GELU"),
    "a class decorator": ("W = VALUE\ndef widen(cls):\n    cls.width = W\n    return cls\n@widen\nclass Net:\n"
                          "    pass\n", "1", "2"),
    "an attribute set after the class": ("class Net:\n    pass\nNet.width = VALUE\n", "1", "2"),
}


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str):
    (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    return importlib.import_module(name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_value_the_source_does_not_show_is_hashed(case, tmp_path, monkeypatch) -> None:
    template, before, after = CASES[case]
    digests = [code_digest(_module(tmp_path, monkeypatch, f"values28_{i}", template.replace("VALUE", value)).Net)
               for i, value in enumerate((before, after, before))]
    assert digests[0] != digests[1]
    assert digests[0] == digests[2]  # the same code, another module: one digest


def test_a_tuple_slot_and_namedtuple_field_are_left_out(tmp_path, monkeypatch) -> None:
    """Descriptors made by the class machinery show nothing the source does not: no new digest."""
    module = _module(tmp_path, monkeypatch, "values28_desc", textwrap.dedent("""
        import typing
        class Slots:
            __slots__ = ("a", "b")
        class Pair(typing.NamedTuple):
            x: int = 1
        """))
    from harness.code_digest import settings_read
    assert settings_read(module.Slots) == settings_read(module.Pair) == {}


def test_the_new_values_have_one_digest_under_every_hash_seed(tmp_path) -> None:
    (tmp_path / "seeds28.py").write_text(textwrap.dedent("""
        import dataclasses, enum, math, pathlib, re, typing
        import torch
        class Color(enum.Flag):
            R = 1
            G = 2
        @dataclasses.dataclass
        class Cfg:
            names: frozenset = frozenset("abcdef")
        K = 3
        class Net:
            FS = frozenset({"a", "b", "c", K})
            D = {1: "a", "b": 2, (1, "x"): 3}
            FLAG = Color.R | Color.G
            NAN, NEG = math.nan, -0.0 * K
            DT, DEV = torch.float16, torch.device("cpu")
            PAT = re.compile("a+" + "b")
            P = pathlib.Path("/x") / "y"
            CFG = Cfg()
            OPT = typing.Optional[int]
            BIG = torch.arange(10 * K)
        """), encoding="utf-8")
    script = "import seeds28; from harness.code_digest import code_digest; print(code_digest(seeds28.Net))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(harness.__file__).parents[1])])}
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                              env={**env, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2", "3")}
    assert len(digests) == 1
