"""The code digest's gaps left open after digestattack27 (digest28). Each test below failed on
f410fdc, before the fix it names, unless it says it pins what stays:

- a class attribute set from a value the class's source does not show was not hashed: `WIDTH =
  BASE * 2` kept its digest from BASE = 32 to 64 (so did a constant imported from another module, an
  enum member, a `functools.partial` of a class, a nested class's reads, an array, a C function), and
  the old model's runs were served as the new one's; so was every attribute of a class without
  source (a notebook's), literals included;
- a list holding itself, given as a partial's argument, hung the digest;
- `inspect.getsource` parsed the whole module once for every class (`harness.code_source`).

What must not move: the digest of a class whose body sets literals only (a recorder's `name`, a
NamedTuple, a dataclass, an enum), pinned below at f410fdc's values, and the source text itself."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_digest_attack27 import _module

import harness
from harness.code_digest import code_digest, settings_read

CONSTS = "BASE = VALUE\nNAMES = ('a', 'b', 'VALUE')\n"

#: class attributes whose value the source does not show; each template reads VALUE (32, then 64)
CASES = {
    "computed from a module value": """
        BASE = VALUE
        class Net:
            WIDTH = BASE * 2
            def __init__(self):
                self.width = self.WIDTH
        def tiny(input_shape, num_classes):
            return Net()
        """,
    "a constant imported by name": """
        from consts28 import BASE
        class Net:
            WIDTH = BASE
        def tiny(input_shape, num_classes):
            return Net()
        """,
    "a constant of an imported module": """
        import consts28
        class Net:
            WIDTH = consts28.BASE
        def tiny(input_shape, num_classes):
            return Net()
        """,
    "a partial of a class": """
        import functools
        BASE = VALUE
        class Block:
            def __init__(self, width):
                self.width = width
        class Net:
            block = functools.partial(Block, width=BASE)
        def tiny(input_shape, num_classes):
            return Net()
        """,
    "a nested class's read": """
        BASE = VALUE
        class Net:
            class Block:
                def __init__(self):
                    self.width = BASE
        def tiny(input_shape, num_classes):
            return Net()
        """,
    "an enum member": """
        import enum
        BASE = VALUE
        class Width(enum.Enum):
            WIDE = BASE
        def tiny(input_shape, num_classes):
            return Width.WIDE.value
        """,
    "a set of text": """
        from consts28 import NAMES
        class Net:
            LAYERS = frozenset(NAMES)
        """,
    "a tensor": """
        import torch
        FILL = VALUE
        class Net:
            MEAN = torch.full((3,), FILL, dtype=torch.bfloat16)
        """,
    "a numpy array": """
        import numpy as np
        FILL = VALUE
        class Net:
            MEAN = np.full(3, FILL)
        """,
    "a C function": """
        import torch
        ACT = torch.relu if VALUE == 32 else torch.tanh
        class Net:
            act = staticmethod(ACT)
        """,
    "a literal changed after the class": """
        BASE = VALUE
        class Net:
            WIDTH = 1
        Net.WIDTH = BASE
        """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_class_attribute_the_source_does_not_show_changes_the_digest(tmp_path, monkeypatch, case) -> None:
    found = []
    for i, value in enumerate(("32", "64")):
        _module(tmp_path, monkeypatch, "consts28", CONSTS.replace("VALUE", value))
        module = _module(tmp_path, monkeypatch, f"digest28_{i}", CASES[case].replace("VALUE", value))
        found.append(code_digest(getattr(module, "tiny", None) or module.Net))
    assert found[0] != found[1]


def test_a_class_without_source_hashes_its_attributes() -> None:
    digests = []
    for scale in ("2.0", "3.0"):
        namespace = {"__name__": "__main__"}
        exec(f"class Rec:\n    SCALE = {scale}\n    def f(self):\n        return self.SCALE\n", namespace)
        digests.append(code_digest(namespace["Rec"]))
    assert digests[0] != digests[1]


PINNED = '''
import dataclasses
import enum
import typing

from torch import nn

HIDDEN = 32


class Options(typing.NamedTuple):
    width: int = 16
    name: str = "tiny"


class Reader(typing.Protocol):
    def read(self) -> int: ...


@dataclasses.dataclass
class Recipe:
    lr: float = 0.1
    steps: int = 3


class Act(enum.Enum):
    RELU = 1
    TANH = 2


class Rec:
    name = "pin28_rec"
    version = 2
    SCALES = (1.0, 2.0)

    def on_batch(self, x):
        return x * self.SCALES[0] * HIDDEN


class Net(nn.Module):
    expansion = 4

    def __init__(self, width=HIDDEN):
        super().__init__()
        self.fc = nn.Linear(width, width * self.expansion)

    @staticmethod
    def act(x):
        return x

    def forward(self, x):
        return self.act(self.fc(x))


def tiny(input_shape, num_classes):
    opts, recipe = Options(), Recipe()
    return Net(opts.width + recipe.steps + Act.RELU.value)
'''

#: f410fdc's digests of PINNED's classes and factory: literal class attributes are shown by the source
F410FDC = {"tiny": "43e0327b9788c088", "Rec": "7c708740a883b952", "Net": "13fef915c6755a82",
           "Options": "d80bee681eb9cf96", "Reader": "5f9ad49eea1a2373", "Recipe": "15f914d737a058d8",
           "Act": "788cfd447fde3516"}


def test_classes_whose_bodies_set_literals_keep_their_digests(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "pin28mod", PINNED)
    assert {name: code_digest(getattr(module, name)) for name in F410FDC} == F410FDC


def test_a_class_attribute_set_anew_in_every_process_is_named(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "digest28_run", """
        import uuid
        class Rec:
            RUN = str(uuid.uuid4())
            ORDER = {name: i for i, name in enumerate({"a", "b"})}
        """)
    order = ", ".join(f"{k!r}: {v}" for k, v in module.Rec.ORDER.items())
    assert settings_read(module.Rec) == {"digest28_run.Rec.RUN": repr(module.Rec.RUN),
                                         "digest28_run.Rec.ORDER": "{" + order + "}"}


def test_a_set_attribute_has_one_digest_under_every_hash_seed(tmp_path) -> None:
    (tmp_path / "seed28.py").write_text("NAMES = tuple('abcdefgh')\nclass Net:\n    LAYERS = set(NAMES)\n")
    script = "import seed28; from harness.code_digest import code_digest; print(code_digest(seed28.Net))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(harness.__file__).parents[1])])}
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                              env={**env, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_a_list_holding_itself_is_digested(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "digest28_cycle", """
        ITEMS = [1]
        ITEMS.append(ITEMS)
        class Net:
            items = ITEMS
        def make(input_shape, num_classes, items):
            return items
        """)
    assert code_digest(module.Net) == code_digest(module.Net)
    assert len(code_digest(functools.partial(module.make, items=module.ITEMS))) == 16


def _classes(root) -> list[type]:
    """Every class of memprox's modules, nested ones included."""
    for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, todo = [], [v for name, m in list(sys.modules.items()) if name.startswith("harness")
                       for v in vars(m).values() if inspect.isclass(v) and v.__module__ == name]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += [v for v in vars(cls).values()
                 if inspect.isclass(v) and v.__qualname__.startswith(cls.__qualname__ + ".")]
    return found


def _text(get, obj) -> str:
    try:
        return get(obj)
    except Exception as e:  # the same error counts as the same result
        return type(e).__name__


def test_the_source_is_inspects_for_every_class_of_memprox(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "digest28_shapes", '''
        import functools
        if True:
            class Twice:
                A = 1
        else:
            class Twice:
                A = 2
        def make():
            class Local:
                pass
            return Local
        @functools.total_ordering
        class Decorated:
            class Inner:
                """text
        at the margin"""
            def __lt__(self, other):
                return False
        try:
            class InTry:
                pass
        except ImportError:
            pass
        ''')
    from harness.code_source import source

    classes = _classes(harness) + [module.Twice, module.make(), module.Decorated, module.Decorated.Inner, module.InTry]
    assert len(classes) > 100
    assert [_text(source, c) for c in classes] == [_text(inspect.getsource, c) for c in classes]


def test_a_module_of_many_classes_is_parsed_once(tmp_path, monkeypatch) -> None:
    text = "".join(f"class C{i}:\n    def f(self):\n        return C{i + 1}\n" for i in range(40))
    text += "class C40:\n    x = 1\n"
    module = _module(tmp_path, monkeypatch, "digest28_many", text)
    parses = []
    parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda src, *a, **k: parses.append(len(src) >= len(text)) or parse(src, *a, **k))
    getattr(sys.modules.get("harness.code_source"), "_CLASS_LINES", {}).clear()
    code_digest(module.C0)
    assert sum(parses) == 1  # f410fdc: 41, one per class


def test_an_object_array_is_not_hashed_by_its_addresses(tmp_path, monkeypatch) -> None:
    text = """
        import numpy as np
        class Thing:
            pass
        class Net:
            THINGS = np.array([Thing(), Thing()], dtype=object)
        """
    digests = {code_digest(_module(tmp_path, monkeypatch, f"digest28_objects{i}", text).Net) for i in range(2)}
    assert len(digests) == 1
