"""The code digest's documented blind spots closed in digest29 (each test failed at 6332435, before
the change, unless it says it pins what stays): the digest read the object's own module only, so

- a base class from another module of the user's (`class Net(blocks.Base)`) and what it reads,
- the attributes of a non-dataclass instance held as a class attribute (`cfg = Config(WIDTH)`),
- an instance inside a tuple or list held as a class attribute (`blocks = (Block(WIDTH),)`),
- a value read through another module of the user's (`config.SCALE`, `blocks.make_block` in a factory),

could change and keep the digest: the old model's runs (their AUROC, FLOPs) were served as the new
one's. An edit of a comment there keeps the digest, and memprox's own code, the standard library and
installed packages (torch) are still not read (`code_digest_user.user_module`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_digest_attack27 import _module

import harness
from harness.code_digest import code_digest, code_read, settings_read
from harness.code_digest_user import user_module


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    """A module rewritten within the same second at the same size would be imported from its stale .pyc."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _digests(tmp_path, monkeypatch, other: str, versions: list[str], main: str, source: str, attribute: str
             ) -> list[str]:
    """The digest of `attribute` of module `main` (written from `source`) with module `other` written
    as each of `versions` in turn, both imported afresh each time."""
    found = []
    for text in versions:
        (tmp_path / f"{other}.py").write_text(textwrap.dedent(text), encoding="utf-8")
        monkeypatch.delitem(sys.modules, other, raising=False)
        found.append(code_digest(getattr(_module(tmp_path, monkeypatch, main, source), attribute)))
    return found


def _edits(text: str, old: str, new: str) -> list[str]:
    """`text`, `text` with `old` -> `new`, and `text` with a comment added (no edit of the code)."""
    assert old in text
    return [text, text.replace(old, new), text + "\n# a comment, not code\n"]


BASE = """
HIDDEN = 32


class Base:
    WIDTH = HIDDEN * 2

    def scale(self, x):
        return x * FACTOR


FACTOR = 2.0
"""


@pytest.mark.parametrize(("old", "new"), [("FACTOR = 2.0", "FACTOR = 3.0"), ("HIDDEN = 32", "HIDDEN = 64"),
                                          ("return x * FACTOR", "return x + FACTOR")])
def test_a_base_class_of_another_user_module_is_read(tmp_path, monkeypatch, old, new) -> None:
    main = "import base29 as blocks\n\n\nclass Net(blocks.Base):\n    def forward(self, x):\n        return x\n"
    before, edited, commented = _digests(tmp_path, monkeypatch, "base29", _edits(BASE, old, new), "net29", main, "Net")
    assert before != edited  # 6332435: equal, the base class of another module was not read
    assert before == commented


def test_a_recorder_inherits_from_a_base_of_another_user_module(tmp_path, monkeypatch) -> None:
    rec = """
        from recbase29 import Base

        class Rec(Base):
            name = "rec29"
        """
    base = "class Base:\n    def on_batch(self, x):\n        return x * 2\n"
    before, edited, commented = _digests(tmp_path, monkeypatch, "recbase29", _edits(base, "* 2", "* 3"),
                                         "rec29mod", rec, "Rec")
    assert before != edited and before == commented
    module = sys.modules["rec29mod"]
    assert sys.modules["recbase29"].Base in code_read(module.Rec)  # compared with its file under inprocess


CONFIG = """
class Config:
    def __init__(self, width):
        self.width = width
        self.layers = [width, width // 2]
        self.me = self  # a cycle: the digest ends


class Block:
    def __init__(self, width):
        self.width = width
"""


@pytest.mark.parametrize("attribute", ["cfg = Config(WIDTH)", "blocks = (Block(WIDTH),)", "blocks = [Block(WIDTH)]",
                                       "nested = {'a': (Block(WIDTH),)}"])
def test_what_an_instance_held_as_a_class_attribute_holds_is_read(tmp_path, monkeypatch, attribute) -> None:
    net = f"from cfg29 import Block, Config\n\nWIDTH = VALUE\n\n\nclass Net:\n    {attribute}\n"
    digests = [code_digest(_module(tmp_path, monkeypatch, f"inst29_{i}", net.replace("VALUE", v)).Net)
               for i, v in enumerate(("64", "128", "64"))]
    assert digests[0] != digests[1]  # 6332435: equal, an instance was hashed by its class alone
    assert digests[0] == digests[2]


@pytest.fixture(autouse=True)
def _config_module(tmp_path, monkeypatch):
    (tmp_path / "cfg29.py").write_text(CONFIG, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cfg29", raising=False)


TORCH_BLOCK = """
from torch import nn

WIDTH = VALUE


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)


class Net(nn.Module):
    blocks = (Block(WIDTH),)
"""


def test_a_torch_block_in_a_tuple_is_read_by_its_parameters_shapes(tmp_path, monkeypatch) -> None:
    digests = [code_digest(_module(tmp_path, monkeypatch, "torch29", TORCH_BLOCK.replace("VALUE", v)).Net)
               for v in ("8", "16", "8")]
    assert digests[0] != digests[1] and digests[0] == digests[2]  # 6332435: all equal


SETTINGS = """
SCALE = 2.0


def make_block(width):
    return [width] * 2


class Layer:
    pass
"""

FACTORY = """
import settings29


def make(input_shape, num_classes):
    return settings29.make_block(num_classes) + [settings29.SCALE, settings29.Layer]
"""


@pytest.mark.parametrize(("old", "new"), [("SCALE = 2.0", "SCALE = 4.0"), ("[width] * 2", "[width] * 3"),
                                          ("    pass", "    depth = 2")])
def test_a_value_read_through_a_user_module_is_read(tmp_path, monkeypatch, old, new) -> None:
    before, edited, commented = _digests(tmp_path, monkeypatch, "settings29", _edits(SETTINGS, old, new),
                                         "factory29", FACTORY, "make")
    assert before != edited  # 6332435: equal, `settings29.X` was not followed
    assert before == commented


def test_a_value_read_through_a_user_module_is_named(tmp_path, monkeypatch) -> None:
    (tmp_path / "settings29.py").write_text(SETTINGS, encoding="utf-8")
    monkeypatch.delitem(sys.modules, "settings29", raising=False)
    module = _module(tmp_path, monkeypatch, "factory29n", FACTORY)
    assert settings_read(module.make) == {"settings29.SCALE": "2.0"}  # named where a fresh process differs


def test_a_helper_imported_from_a_user_module_is_read(tmp_path, monkeypatch) -> None:
    factory = "from helper29 import width\n\n\ndef make(input_shape, num_classes):\n    return width()\n"
    helper = "def width():\n    return 32\n"
    before, edited, commented = _digests(tmp_path, monkeypatch, "helper29", _edits(helper, "32", "64"),
                                         "helpfactory29", factory, "make")
    assert before != edited and before == commented


def test_installed_standard_and_memprox_modules_are_not_user_code(tmp_path, monkeypatch) -> None:
    import json

    import numpy
    import torch

    _module(tmp_path, monkeypatch, "mine29", "X = 1\n")
    assert user_module("mine29")
    assert not any(user_module(m.__name__) for m in (json, numpy, torch, harness, torch.nn.modules.linear))
    assert not user_module("harness.code_digest") and not user_module("proxies") and not user_module("builtins")


def test_a_torch_model_keeps_its_digest_without_user_modules(tmp_path, monkeypatch) -> None:
    """Pins what stays: torch's classes are read by name, not walked (6332435's digest, computed there)."""
    module = _module(tmp_path, monkeypatch, "keep29", """
        from torch import nn

        class Net(nn.Module):
            act = nn.ReLU

            def forward(self, x):
                return self.act()(x)
        """)
    assert code_digest(module.Net) == KEEP29


KEEP29 = "ff55faaf21fbe38e"


def test_the_digest_is_the_same_in_a_fresh_process_under_any_hash_seed(tmp_path) -> None:
    (tmp_path / "seedbase29.py").write_text(BASE, encoding="utf-8")
    (tmp_path / "cfg29.py").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "seednet29.py").write_text(
        "import seedbase29\nfrom cfg29 import Block, Config\n\n\nclass Net(seedbase29.Base):\n"
        "    blocks = (Block(3), Config(4))\n    names = {'a', 'b', 'c'}\n", encoding="utf-8")
    script = "import seednet29; from harness.code_digest import code_digest; print(code_digest(seednet29.Net))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(harness.__file__).parents[1])])}
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                              env={**env, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(digests) == 1


def test_modules_that_read_each_other_are_digested_once_each(tmp_path, monkeypatch) -> None:
    (tmp_path / "ping29.py").write_text("import pong29\n\n\ndef ping(n):\n    return pong29.pong(n - 1) + pong29.P\n",
                                        encoding="utf-8")
    pong = "import ping29\n\nP = 1\n\n\ndef pong(n):\n    return ping29.ping(n) if n else 0\n"
    (tmp_path / "pong29.py").write_text(pong, encoding="utf-8")
    for name in ("ping29", "pong29"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = _module(tmp_path, monkeypatch, "ping29", (tmp_path / "ping29.py").read_text(encoding="utf-8"))
    assert code_digest(module.ping) == code_digest(module.ping)
    assert {f.__name__ for f in code_read(module.ping)} == {"ping", "pong"}
    assert settings_read(module.ping) == {"pong29.P": "1"}


LISTS = """
from collections import defaultdict

LAYERS = [64, 32]
NAMES = {"a": 1, "b": (2, 3)}
BASE = 8
SIZES = [BASE * i for i in range(3)]
CACHE = {}
SEEN = defaultdict(list)


def make(input_shape, num_classes):
    CACHE[num_classes] = len(CACHE)
    SEEN[num_classes].append(input_shape)
    return LAYERS + [NAMES["a"]] + SIZES
"""


@pytest.mark.parametrize(("old", "new"), [("[64, 32]", "[128, 64]"), ('"a": 1', '"a": 2'), ("BASE = 8", "BASE = 16")])
def test_a_module_level_list_or_dict_a_function_reads_is_read(tmp_path, monkeypatch, old, new) -> None:
    main = "import lists29\n\n\ndef make(input_shape, num_classes):\n    return lists29.make(input_shape, 2)\n"
    before, edited, commented = _digests(tmp_path, monkeypatch, "lists29", _edits(LISTS, old, new), "listsmain29", main,
                                         "make")
    assert before != edited  # 6332435: equal, a list or dict was not read
    assert before == commented


def test_a_list_or_dict_filled_at_run_time_keeps_its_digest(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "cache29", LISTS)
    before = code_digest(module.make)
    module.make((3, 8, 8), 10)  # fills CACHE and SEEN, written empty: read as written, as in a fresh process
    assert code_digest(module.make) == before
    assert settings_read(module.make) == {"cache29.SIZES": "list(0, 8, 16)"}  # computed: named by its value
    module.LAYERS.append(16)  # no longer the literal written: read by its value, named where a fresh process differs
    assert code_digest(module.make) != before and settings_read(module.make)["cache29.LAYERS"] == "list(64, 32, 16)"


def test_a_list_edited_in_a_file_not_reloaded_is_read_as_the_process_holds_it(tmp_path, monkeypatch) -> None:
    """Under `--executor inprocess` the process trains the list it imported: the edited file's key would
    serve that model's runs as the edited one's."""
    module = _module(tmp_path, monkeypatch, "stale29", LISTS)
    (tmp_path / "stale29.py").write_text(textwrap.dedent(LISTS).replace("[64, 32]", "[128, 64]"), encoding="utf-8")
    stale = code_digest(module.make)
    assert settings_read(module.make)["stale29.LAYERS"] == "list(64, 32)"  # named: a fresh process differs
    assert stale != code_digest(_module(tmp_path, monkeypatch, "stale29", LISTS.replace("[64, 32]", "[128, 64]")).make)


def test_a_list_filled_as_its_module_runs_is_read_by_its_value(tmp_path, monkeypatch) -> None:
    text = "WIDTH = VALUE\nLAYERS = [1]\nLAYERS.append(WIDTH)\n\n\ndef make(i, n):\n    return LAYERS\n"
    digests = [code_digest(_module(tmp_path, monkeypatch, "filled29", text.replace("VALUE", v)).make)
               for v in ("32", "64")]
    assert digests[0] != digests[1]


@pytest.mark.parametrize("read", ["CFG.width", "cfgmod29.CFG.width"])
def test_an_instance_of_a_user_class_a_function_reads_is_read_by_what_it_holds(tmp_path, monkeypatch, read) -> None:
    text = f"import cfgmod29\nfrom cfg29 import Config\n\nCFG = Config(VALUE)\n\n\ndef make(i, n):\n    return {read}\n"
    digests = []
    for value in ("16", "32", "16"):
        (tmp_path / "cfgmod29.py").write_text(f"from cfg29 import Config\n\nCFG = Config({value})\n", encoding="utf-8")
        monkeypatch.delitem(sys.modules, "cfgmod29", raising=False)
        digests.append(code_digest(_module(tmp_path, monkeypatch, "instmain29", text.replace("VALUE", value)).make))
    assert digests[0] != digests[1] and digests[0] == digests[2]  # 6332435: all equal
    module = sys.modules["instmain29"]
    assert ("cfgmod29.CFG" if read.startswith("cfgmod29") else "instmain29.CFG") in settings_read(module.make)


def test_a_base_class_of_another_module_edited_since_import_is_refused_inprocess(tmp_path, monkeypatch) -> None:
    from harness.code_source import edited_since_import

    (tmp_path / "edbase29.py").write_text(BASE, encoding="utf-8")
    monkeypatch.delitem(sys.modules, "edbase29", raising=False)
    module = _module(tmp_path, monkeypatch, "ednet29", "import edbase29\n\n\nclass Net(edbase29.Base):\n    pass\n")
    code_digest(module.Net)
    assert edited_since_import(code_read(module.Net)) == []
    (tmp_path / "edbase29.py").write_text(BASE.replace("x * FACTOR", "x + FACTOR"), encoding="utf-8")
    assert edited_since_import(code_read(module.Net)) == ["Base", "Base.scale"]


def test_a_module_whose_lists_are_read_is_parsed_once(tmp_path, monkeypatch) -> None:
    import ast

    module = _module(tmp_path, monkeypatch, "parse29", LISTS)
    text = textwrap.dedent(LISTS)
    whole = []
    parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda source, *a, **k: (whole.append(source == text), parse(source, *a, **k))[1])
    digests = {code_digest(module.make) for _ in range(4)}  # the planner digests the model once per run
    assert len(digests) == 1 and sum(whole) == 1
