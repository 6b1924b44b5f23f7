"""The code digest's reach into the user's other modules (digest29), attacked (digestattack29). Each test
failed at f92dc10 (b56d757's code digest), before the fix, unless it says it pins what holds:

- a value read through a namespace package (no `__init__.py`: `ns.sub.deep.WIDTH`) was not read, so
  WIDTH = 8 -> 9 kept the digest and served the old model's runs;
- an instance of a class with slots whose `__getattr__` raises KeyError crashed the digest (KeyError: '__dict__');
- under `--executor inprocess`, a module-level list of another module (or the model's own) edited on disk
  without a reload was not refused: `ACTS = [nn.ReLU]` -> `[nn.GELU]` trained the imported list under
  the edited text's address, which a fresh process then served as the GELU model's runs;
- the inprocess refusal of another module's edit named the model's module (`importlib.reload(model)`,
  which leaves the edit unloaded), and the fresh-process refusal advised moving a changing value
  "to another module", which the digest now reads too."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.code_digest import code_digest, code_read, settings_read
from harness.code_source import edited_since_import
from harness.errors import HarnessError
from harness.model_registry import MODELS, model_fingerprint
from harness.worker_imports import _digest_differs, check_workers_know

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    """A module rewritten within the same second at the same size would be imported from its stale .pyc."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")


def _fresh(monkeypatch, root: Path, prefixes: tuple[str, ...]) -> None:
    """`root` on the path, and every module under `prefixes` forgotten (imported afresh next)."""
    monkeypatch.syspath_prepend(str(root))
    for name in [n for n in sys.modules if n.startswith(prefixes)]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()


NS_MODEL = """
import nsa29.sub.deep


def factory():
    return nsa29.sub.deep.WIDTH * 2
"""


@pytest.mark.parametrize("width", ["9", "(8, 9)"])
def test_a_value_read_through_a_namespace_package_is_read(tmp_path, monkeypatch, width) -> None:
    digests = []
    for value in ("8", width, "8\n# a comment, not code\n"):
        _write(tmp_path, {"nsa29/sub/deep.py": f"WIDTH = {value}\n", "nsmodel29.py": NS_MODEL})
        _fresh(monkeypatch, tmp_path, ("nsa29", "nsmodel29"))
        module = importlib.import_module("nsmodel29")
        assert not hasattr(sys.modules["nsa29"], "__file__") or sys.modules["nsa29"].__file__ is None
        digests.append(code_digest(module.factory))
    assert digests[0] != digests[1]  # f92dc10: equal, `nsa29` has no file and the chain stopped there
    assert digests[0] == digests[2]
    assert settings_read(module.factory) == {"nsa29.sub.deep.WIDTH": "8"}


SLOTS = """
class Slot:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a = VALUE

    def __getattr__(self, name):
        raise KeyError(name)


SLOT = Slot()


class Maker:
    __slots__ = ("w",)

    def __init__(self):
        self.w = VALUE

    def __getattr__(self, name):
        raise KeyError(name)

    def __call__(self, input_shape, num_classes):
        return SLOT.a + self.w


def factory():
    return SLOT


MAKER = Maker()
"""


def test_an_instance_whose_getattr_raises_keyerror_is_digested(tmp_path, monkeypatch) -> None:
    found = []
    for value in ("1", "2"):
        _write(tmp_path, {"slots29.py": SLOTS.replace("VALUE", value)})
        _fresh(monkeypatch, tmp_path, ("slots29",))
        module = importlib.import_module("slots29")
        found.append((code_digest(module.factory), code_digest(module.MAKER)))  # f92dc10: KeyError: '__dict__'
        assert settings_read(module.factory)["slots29.SLOT"].endswith(f"{{'a': {value}}}")
    assert found[0][0] != found[1][0]
    assert found[0][1] != found[1][1]  # a callable instance (no __dict__) by its class: its code holds VALUE


BLOCKS = """
from torch import nn

ACTS = [nn.ReLU, nn.Tanh]
SIZES = [4, 8]
SIZES.append(16)


def helper(width):
    return nn.Linear(width, 2)
"""

MODEL = """
from torch import nn
from harness.model_registry import register_model
from blocks_a29 import helper
import blocks_a29
OWN = [nn.ReLU]


@register_model("attack29_edited", "a model whose other module is edited after its import")
def make(input_shape, num_classes):
    return nn.Sequential(helper(4), *[a() for a in blocks_a29.ACTS + OWN], nn.Linear(2, len(blocks_a29.SIZES)))
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The model's module and its blocks module, imported and digested once (as the first run does)."""
    _write(tmp_path, {"blocks_a29.py": BLOCKS, "model_a29.py": MODEL})
    _fresh(monkeypatch, tmp_path, ("blocks_a29", "model_a29"))
    importlib.import_module("model_a29")
    model_fingerprint("attack29_edited")
    _check()
    yield tmp_path
    MODELS.remove("attack29_edited")


def _check() -> None:
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="attack29_edited")
    check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=True, name="inprocess"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("file", "old", "new", "changed"), [
    ("blocks_a29.py", "[nn.ReLU, nn.Tanh]", "[nn.GELU]", "ACTS"),
    ("blocks_a29.py", "[4, 8]", "[4, 8, 16]", "SIZES"),
    ("blocks_a29.py", "SIZES.append(16)", "SIZES.append(32)", "SIZES"),
    ("model_a29.py", "OWN = [nn.ReLU]", "OWN = [nn.GELU]", "OWN"),
])
def test_an_edited_module_list_is_refused_under_inprocess(project, file, old, new, changed) -> None:
    layers_before, digest_before = str(MODELS.get("attack29_edited").factory((1, 1, 4), 2)), model_fingerprint(
        "attack29_edited")
    (project / file).write_text(textwrap.dedent(BLOCKS if file.startswith("blocks") else MODEL).replace(old, new),
                                encoding="utf-8")
    assert str(MODELS.get("attack29_edited").factory((1, 1, 4), 2)) == layers_before
    module = file.removesuffix(".py")
    with pytest.raises(HarnessError, match=rf"and {module} was edited since this process imported it "
                                           rf"\(changed: {changed}\)"):  # f92dc10: not refused
        _check()
    importlib.reload(sys.modules["blocks_a29"])
    importlib.reload(sys.modules["model_a29"])
    _check()
    assert model_fingerprint("attack29_edited") != digest_before  # the edited list, now loaded
    assert str(MODELS.get("attack29_edited").factory((1, 1, 4), 2)) != layers_before or "append" in new


def test_an_edited_helper_of_another_module_names_that_module(project) -> None:
    text = textwrap.dedent(BLOCKS).replace("(width, 2)", "(width, 3)")
    (project / "blocks_a29.py").write_text(text, encoding="utf-8")
    with pytest.raises(HarnessError) as refused:
        _check()
    assert "and blocks_a29 was edited since this process imported it (changed: helper)" in str(refused.value)
    assert "importlib.reload blocks_a29 then model_a29, or restart" in str(refused.value)  # f92dc10: model_a29 only


def test_an_unedited_project_and_a_comment_are_not_refused(project) -> None:
    """Pins: a comment or a blank line in either module is no edit (held at f92dc10 too)."""
    for file in ("blocks_a29.py", "model_a29.py"):
        path = project / file
        path.write_text("# a comment moves every line\n\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    _check()


def test_the_fresh_process_refusal_does_not_advise_another_module(project) -> None:
    text = str(_digest_differs("model", "attack29_edited", "model_a29", "local", {"model_a29.STAMP": "1.5"}))
    assert "reads a module value set anew in every process" in text
    assert "another module)" not in text  # f92dc10: "(inside a function, or in another module)"
    assert "another module of yours is read too" in text


#: A project of a package with relative imports, a namespace package, a registry filled at import, a
#: set of strings, module globals a fresh process makes anew (a logger, a path, datetime.now(), an open
#: file, a lambda, a torch module) and a class with slots: read by the digest in two processes.
PROJECT = {
    "dpk29/__init__.py": "",
    "dpk29/cfg.py": """
        import datetime
        import logging
        import pathlib

        import torch

        REGISTRY = {}
        TAGS = {"alpha", "beta", "gamma", "delta", "epsilon"}
        LOG = logging.getLogger(__name__)
        WHEN = datetime.datetime.now()
        DATA = pathlib.Path(__file__).parent
        FH = open(__file__)
        ACT = lambda x: x  # noqa: E731
        NET = torch.nn.Linear(3, 4)


        def register(cls):
            REGISTRY[cls.__name__] = cls
            return cls
        """,
    "dpk29/blocks.py": """
        from . import cfg
        from .cfg import register
        from . import model  # circular: model imports blocks


        @register
        class Base:
            __slots__ = ("k",)

            def __init__(self):
                self.k = sorted(cfg.TAGS)

            def go(self, x):
                return cfg.ACT(x) * len(cfg.TAGS) + nsd29.deep.WIDTH


        import nsd29.deep  # noqa: E402
        """,
    "dpk29/model.py": """
        from . import blocks, cfg


        def factory():
            print(cfg.REGISTRY, cfg.TAGS, cfg.LOG, cfg.WHEN, cfg.DATA, cfg.FH, cfg.NET, blocks.Base())
            return blocks.Base
        """,
    "nsd29/deep.py": "WIDTH = 8\n",
}


def test_a_project_digests_alike_in_two_processes(tmp_path) -> None:
    """The same project digests alike in processes of other string hash seeds (held at f92dc10 too), and
    reads the namespace package's WIDTH (f92dc10: not read)."""
    _write(tmp_path, PROJECT)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import dpk29.blocks, dpk29.model; "
              "from harness.code_digest import code_digest, settings_read; "
              "print(code_digest(dpk29.model.factory), sorted(settings_read(dpk29.model.factory)))")
    out = []
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONHASHSEED": seed}, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        out.append(proc.stdout.strip())
    assert out[0] == out[1]
    assert "'nsd29.deep.WIDTH'" in out[0]


def test_fifty_modules_parse_each_once(tmp_path, monkeypatch) -> None:
    """Pins the cost: a factory reading a list and a block class from each of 50 modules of a package
    parses each module's text twice and each class's once, for four digests and the inprocess check."""
    files = {"many29/__init__.py": ""}
    for i in range(50):
        files[f"many29/m{i}.py"] = f"LAYERS = [{i}, {i + 1}]\n\n\nclass Block{i}:\n    W = {i}\n\n" \
                                   f"    def f(self, x):\n        return x + LAYERS[0]\n"
    imports = "".join(f"from . import m{i}\n" for i in range(50))
    body = " + ".join(f"m{i}.LAYERS + [m{i}.Block{i}]" for i in range(50))
    files["many29/model.py"] = imports + f"\n\ndef factory():\n    return {body}\n"
    _write(tmp_path, files)
    _fresh(monkeypatch, tmp_path, ("many29",))
    factory = importlib.import_module("many29.model").factory
    parses = []
    real = ast.parse
    monkeypatch.setattr(ast, "parse", lambda text, *a, **k: parses.append(text) or real(text, *a, **k))

    def of_many() -> int:  # other user modules (this test file) are scanned once per process, cached after
        return sum(1 for text in parses if text.startswith(("LAYERS = [", "class Block")))

    first = code_digest(factory)
    once = of_many()
    assert once == 3 * 50  # per module: its assignments (`_assigned`), its classes' lines, the class's text
    assert {code_digest(factory) for _ in range(3)} == {first}
    assert edited_since_import(code_read(factory)) == []
    assert of_many() == once  # no module parsed again: the next digests and the check read the caches


BIG = """
import helperbig29

BIG = list(range(100_000))
EMPTY = []
SIZES = [1, 2]


def factory():
    return len(BIG) + len(EMPTY) + len(SIZES) + len(helperbig29.HUGE)
"""


def test_a_big_list_made_by_code_is_not_made_text(tmp_path, monkeypatch) -> None:
    """A list the digest does not read by value (made from code alone, or written empty) is not made text at every
    digest: `BIG = list(range(10**6))` was (f92dc10: a million items' reprs per digest, per run planned)."""
    import harness.code_digest_user as user

    _write(tmp_path, {"bigmod29.py": BIG, "helperbig29.py": "BASE = 0\nHUGE = [BASE] * 100_001\n"})
    _fresh(monkeypatch, tmp_path, ("bigmod29", "helperbig29"))
    module = importlib.import_module("bigmod29")
    sizes = []
    real = user._plain
    monkeypatch.setattr(user, "_plain", lambda value, path: sizes.append(len(value)) or real(value, path)
                        if isinstance(value, list) and not path else real(value, path))
    before = code_digest(module.factory)
    assert 100_000 not in sizes  # f92dc10: BIG and EMPTY made text too, at each digest
    assert 100_001 in sizes  # HUGE is made from a module value (BASE): by value, as before
    assert set(settings_read(module.factory)) == {"helperbig29.HUGE"}  # SIZES is still what is written
    module.SIZES.append(3)  # changed as the module ran: read by value, as before
    assert code_digest(module.factory) != before


FILLED = """
import fillhelp29

LAYERS = [0] * 3
LAYERS.append(VALUE)
EMPTY = []
EMPTY.extend([VALUE, 1])
SIZES = {}
SIZES["head"] = VALUE
REGISTRY = {}


def register(cls):
    REGISTRY[cls.__name__] = cls
    return cls


@register
class Block:
    pass


def factory():
    return LAYERS + EMPTY + [SIZES, REGISTRY, fillhelp29.MORE]
"""


@pytest.mark.parametrize("where", ["fillmod29.py", "fillhelp29.py"])
def test_a_list_or_dict_changed_at_import_is_read(tmp_path, monkeypatch, where) -> None:
    """`LAYERS.append(8)` -> `append(16)` below `LAYERS = [0] * 3` or `LAYERS = []` kept the digest (f92dc10),
    in the model's module and in another of yours; a registry a decorator fills keeps its digest."""
    found = []
    for value in ("8", "16", "( 8 )"):  # the third is only written otherwise
        main, helper = FILLED.replace("VALUE", "8"), "MORE = []\nMORE.append(VALUE)\n".replace("VALUE", "8")
        if where == "fillmod29.py":
            main = FILLED.replace("VALUE", value)
        else:
            helper = helper.replace("append(8)", f"append({value})")
        _write(tmp_path, {"fillmod29.py": main, "fillhelp29.py": helper})
        _fresh(monkeypatch, tmp_path, ("fillmod29", "fillhelp29"))
        module = importlib.import_module("fillmod29")
        found.append((code_digest(module.factory), settings_read(module.factory)))
    assert found[0][0] != found[1][0]  # f92dc10: equal
    assert found[0] == found[2]
    assert "fillmod29.REGISTRY" not in found[0][1]  # classes: no plain value, the same text in every process
    if where == "fillmod29.py":
        assert found[1][1]["fillmod29.LAYERS"] == "list(0, 0, 0, 16)"
        assert found[1][1]["fillmod29.SIZES"] == "dict('head': 16)"
    else:
        assert found[1][1]["fillhelp29.MORE"] == "list(16)"


def test_a_list_changed_by_a_module_the_worker_does_not_import_names_that_cause(project, monkeypatch) -> None:
    """A plugin module imported here (not by the workers, which import the model's module alone) appends to
    a list the model reads: the fresh-process check refuses it (it did), and now says that an import here
    can be the cause and how to fix it (f92dc10: 'a module value set anew in every process' only)."""
    monkeypatch.setattr(sys.modules["blocks_a29"], "SIZES", [*sys.modules["blocks_a29"].SIZES, 99])
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="attack29_edited")
    with pytest.raises(HarnessError) as refused:
        check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=False, name="local"))  # type: ignore[arg-type]
    text = str(refused.value)
    assert "blocks_a29.SIZES is list(4, 8, 16, 99) here and list(4, 8, 16) there" in text
    assert "changed by a module this process imported and a worker, importing model_a29 alone, does not" in text
    assert "import that module in model_a29" in text


TAGGED = """
class Config:
    def __init__(self, tags):
        self.tags = tags
        self.objects = {object}


CFG = Config(VALUE)


def factory():
    return CFG
"""


def test_a_set_held_by_an_instance_is_read_in_sorted_order(tmp_path, monkeypatch) -> None:
    """`Config(tags={"a", "b"})` -> `{"a", "c"}` kept the digest (f92dc10: the set by its type alone); its
    sorted text is the same in processes of other string hash seeds."""
    found = []
    for value in ('{"alpha", "beta", "gamma"}', '{"alpha", "beta", "delta"}', '{"gamma", "beta", "alpha"}'):
        _write(tmp_path, {"tagged29.py": TAGGED.replace("VALUE", value)})
        _fresh(monkeypatch, tmp_path, ("tagged29",))
        found.append(code_digest(importlib.import_module("tagged29").factory))
    assert found[0] != found[1]  # f92dc10: equal
    assert found[0] == found[2]
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import tagged29; "
              "from harness.code_digest import code_digest; print(code_digest(tagged29.factory))")
    out = {subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": seed}, cwd=ROOT, check=True).stdout for seed in "12"}
    assert out == {found[0] + "\n"}
