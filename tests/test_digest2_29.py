"""The code digest attacked with realistic user projects (digest2_29). Each test failed at 7c6dca1, before the
fix, unless it says it pins what holds; each edit below kept the digest, so the old model's runs (their AUROC
and FLOPs) were served as the edited one's:

- a class attribute that is a function of another module of the user's (`fn = acts.act`, `staticmethod(act)`):
  its globals were walked, its source never read (`return x * 1` -> `* 2`);
- a factory decorated by a user module's `functools.wraps` decorator: `inspect` gives the wrapped function's
  source for the wrapper, so the wrapper's own body (`f(*a) * 1` -> `* 2`) was unread;
- a module-level `functools.partial(Block, width=W)` the factory reads (W from another module): hashed as nothing;
- a `@functools.cache` / `lru_cache` helper the factory calls: the cache wrapper is no function, its code unread."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.code_digest import code_digest, code_read, settings_read

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    """A module rewritten within the same second at the same size would be imported from its stale .pyc."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _digest(tmp_path: Path, monkeypatch, files: dict[str, str], entry: str = "model29d2.make") -> str:
    """`entry`'s digest with `files` written in a folder of their own and imported afresh."""
    root = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    for name in [n for n in sys.modules if n.endswith("29d2")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    module, _, attr = entry.rpartition(".")
    digest = code_digest(getattr(importlib.import_module(module), attr))
    sys.path.remove(str(root))
    return digest


def _differ(tmp_path, monkeypatch, project, before, after) -> None:
    first, second = (_digest(tmp_path, monkeypatch, project(v)) for v in (before, after))
    assert first != second
    assert _digest(tmp_path, monkeypatch, project(before)) == first  # the same project, the same digest


def _class_attribute(k: int, attribute: str = "act") -> dict[str, str]:
    return {"acts29d2.py": f"def act(x):\n    return x * {k}\n",
            "model29d2.py": f"import acts29d2\nfrom acts29d2 import act\n\n\nclass Net:\n    fn = {attribute}\n\n"
                            "    def forward(self, x):\n        return self.fn(x)\n\n\ndef make(shape, n):\n"
                            "    return Net()\n"}


@pytest.mark.parametrize("attribute", ["act", "staticmethod(act)", "staticmethod(acts29d2.act)"])
def test_a_class_attribute_that_is_another_user_modules_function_is_read(tmp_path, monkeypatch, attribute) -> None:
    _differ(tmp_path, monkeypatch, lambda k: _class_attribute(k, attribute), 1, 2)


def test_a_class_attribute_function_is_compared_by_inprocess(tmp_path, monkeypatch) -> None:
    """Pins what holds: the function is among the code `--executor inprocess` compares with its file."""
    _digest(tmp_path, monkeypatch, _class_attribute(1))
    assert "act" in {getattr(f, "__qualname__", "") for f in code_read(sys.modules["model29d2"].make)}


def _decorated(k: int) -> dict[str, str]:
    return {"decos29d2.py": f"import functools\n\n\ndef scaled(f):\n    @functools.wraps(f)\n    def wrapper(*a):\n"
                            f"        return f(*a) * {k}\n    return wrapper\n",
            "model29d2.py": "from decos29d2 import scaled\n\n\n@scaled\ndef make(shape, n):\n    return 1\n"}


def test_a_user_decorators_wrapper_body_is_read(tmp_path, monkeypatch) -> None:
    _differ(tmp_path, monkeypatch, _decorated, 1, 2)


def test_an_edit_of_the_wrapped_factory_is_still_read(tmp_path, monkeypatch) -> None:
    """Pins what holds: the wrapped factory's own edit changes the digest."""
    project = {**_decorated(1), "model29d2.py": "from decos29d2 import scaled\n\n\n@scaled\ndef make(shape, n):\n"
                                                "    return 2\n"}
    assert _digest(tmp_path, monkeypatch, _decorated(1)) != _digest(tmp_path, monkeypatch, project)


def _partial(w: int) -> dict[str, str]:
    return {"cfg29d2.py": f"W = {w}\n",
            "model29d2.py": "import functools\n\nfrom cfg29d2 import W\n\n\nclass Block:\n"
                            "    def __init__(self, width):\n        self.width = width\n\n\n"
                            "B = functools.partial(Block, width=W)\n\n\ndef make(shape, n):\n    return B()\n"}


def test_a_module_level_partial_is_read_with_its_arguments(tmp_path, monkeypatch) -> None:
    _differ(tmp_path, monkeypatch, _partial, 8, 16)


def _cached(k: int, same_module: bool) -> dict[str, str]:
    helper = f"import functools\n\n\n@functools.lru_cache(maxsize=None)\ndef width():\n    return {k}\n"
    if same_module:
        return {"model29d2.py": helper + "\n\ndef make(shape, n):\n    return width()\n"}
    return {"helpers29d2.py": helper.replace("lru_cache(maxsize=None)", "cache"),
            "model29d2.py": "from helpers29d2 import width\n\n\ndef make(shape, n):\n    return width()\n"}


@pytest.mark.parametrize("same_module", [True, False])
def test_a_cached_helper_is_read(tmp_path, monkeypatch, same_module) -> None:
    _differ(tmp_path, monkeypatch, lambda k: _cached(k, same_module), 8, 16)


def test_the_new_reads_are_the_same_in_a_fresh_process(tmp_path, monkeypatch) -> None:
    """Pins what holds: no address or hash-seed order in the new text, so the local executor does not refuse."""
    files = {**_class_attribute(1), **_decorated(1), **_partial(8), **_cached(8, False)}
    files["model29d2.py"] = ("import functools\nimport acts29d2\nfrom cfg29d2 import W\nfrom decos29d2 import scaled\n"
                             "from helpers29d2 import width\n\n\nclass Block:\n    fn = staticmethod(acts29d2.act)\n\n"
                             "    def __init__(self, width):\n        self.width = width\n\n\n"
                             "B = functools.partial(Block, width=W)\n\n\n@scaled\ndef make(shape, n):\n"
                             "    return B(), width()\n")
    here = _digest(tmp_path, monkeypatch, files)
    root = sorted(tmp_path.iterdir())[-1]
    script = "import model29d2; from harness.code_digest import code_digest; print(code_digest(model29d2.make))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root,
                             env={"PYTHONPATH": f"{root}:{ROOT}", "PYTHONHASHSEED": seed, "PATH": "/usr/bin"})
        assert out.stdout.strip() == here


def _many_reads(last: int) -> dict[str, str]:
    names = [f"A{i}" for i in range(300)]
    return {"cfg29d2.py": "".join(f"{n} = {last if n == 'A299' else 1}\n" for n in names),
            "model29d2.py": "import cfg29d2\n\n\ndef make(shape, n):\n    return " +
                            " + ".join(f"cfg29d2.{n}" for n in names) + "\n"}


def test_a_value_read_through_a_module_past_the_255th_name_is_read(tmp_path, monkeypatch) -> None:
    """A function naming more than 255 names reads the later ones with EXTENDED_ARG between the module's load
    and its attribute's: `cfg.A299` (and a 200-module project's `m128.Block128` on) was unread, 1 -> 2 kept it."""
    _differ(tmp_path, monkeypatch, _many_reads, 1, 2)


def _held(k: int, holder: str) -> dict[str, str]:
    return {"acts29d2.py": f"def my_act(x):\n    return x * {k}\n\n\nclass Block:\n    def __init__(self, w):\n"
                           f"        self.w = w\n\n    def f(self):\n        return self.w * {k}\n",
            "model29d2.py": f"from acts29d2 import Block, my_act\n\nHELD = {holder}\n\n\ndef make(shape, n):\n"
                            "    return HELD\n"}


@pytest.mark.parametrize("holder", ["{'relu': my_act}", "[Block]", "[Block(3)]", "(my_act,)",
                                    "[Block(w) for w in (1, 2)]"])
def test_the_code_a_module_list_dict_or_tuple_holds_is_read(tmp_path, monkeypatch, holder) -> None:
    """`ACTS = {"relu": my_act}`, `BLOCKS = [Block]`: the list was read as its text alone, so an edit of my_act or
    Block (x * 1 -> x * 2) kept the digest and served the old model's runs."""
    _differ(tmp_path, monkeypatch, lambda k: _held(k, holder), 1, 2)


def test_a_cache_filled_by_a_run_keeps_its_digest(tmp_path, monkeypatch) -> None:
    """Pins what holds: a dict written empty and filled with instances of the user's as the model runs is not read."""
    files = {"model29d2.py": "CACHE = {}\n\n\nclass Item:\n    def __init__(self, w):\n        self.w = w\n\n\n"
                             "def make(shape, n):\n    return CACHE.setdefault(n, Item(n))\n"}
    first = _digest(tmp_path, monkeypatch, files)
    make = sys.modules["model29d2"].make
    make((1,), 3)
    assert code_digest(make) == first


def test_what_a_held_instance_holds_is_named_where_a_fresh_process_differs(tmp_path, monkeypatch) -> None:
    """`PROTOS = [Stamp()]` holding a time: the local executor refuses it (its runs would never be reused), naming
    module.PROTOS with what it holds (settings_read), not only asking whether the module was edited."""
    files = {"model29d2.py": "class Stamp:\n    def __init__(self, t):\n        self.t = t\n\n\n"
                             "PROTOS = [Stamp(1.5)]\n\n\ndef make(shape, n):\n    return PROTOS\n"}
    _digest(tmp_path, monkeypatch, files)
    assert "1.5" in settings_read(sys.modules["model29d2"].make)["model29d2.PROTOS"]


_BLOCK = ("import functools\n\nfrom cfg29d2 import W\n\n\nclass Block:\n    def __init__(self, width):\n"
          "        self.w = width\n\n\n")


@pytest.mark.parametrize("model", [
    "D = {'a': functools.partial(Block, width=W)}\n\n\ndef make(shape, n):\n    return D\n",
    "def make(shape, n, block=functools.partial(Block, width=W)):\n    return block()\n",
    "class Net:\n    blocks = {'a': functools.partial(Block, width=W)}\n\n\ndef make(shape, n):\n    return Net()\n",
    "class Net:\n    def __init__(self, block=functools.partial(Block, width=W)):\n        self.b = block\n\n\n"
    "def make(shape, n):\n    return Net()\n"])
def test_a_partial_held_or_given_as_a_default_is_read_with_its_arguments(tmp_path, monkeypatch, model) -> None:
    """A partial in a list or dict, or as a default value, was hashed as its type alone: W = 8 -> 16 kept it."""
    _differ(tmp_path, monkeypatch, lambda w: {"cfg29d2.py": f"W = {w}\n", "model29d2.py": _BLOCK + model}, 8, 16)


def test_an_installed_packages_function_in_a_partial_default_is_named_not_read(tmp_path, monkeypatch) -> None:
    """`partial(json.dumps, indent=2)` as a default is its function's name and arguments (not json's code: a key
    must not depend on the machine's installed packages); it was `<functools.partial>`."""
    files = {"model29d2.py": "import functools\nimport json\n\n\n"
                             "def make(shape, n, dump=functools.partial(json.dumps, indent=2)):\n    return dump\n"}
    _digest(tmp_path, monkeypatch, files)
    from harness.code_digest import _argument, _run

    assert _run(_argument(sys.modules["model29d2"].make.__defaults__[0], "model29d2", {}, {})) == \
        "partial(json.dumps, [], {'indent': 2})"


@pytest.mark.parametrize("model", [
    "import acts29d2\n\n\nclass Net:\n    fn = acts29d2.cached\n\n\ndef make(shape, n):\n    return Net()\n",
    "import functools\n\nimport acts29d2\n\n\nclass Net:\n    @functools.cache\n    def width(self):\n"
    "        return acts29d2.W\n\n\ndef make(shape, n):\n    return Net()\n",
    "import functools\n\nimport acts29d2\n\n\nclass Net:\n    @functools.cached_property\n    def width(self):\n"
    "        return acts29d2.W\n\n\ndef make(shape, n):\n    return Net()\n"])
def test_a_cached_method_or_cached_attribute_function_is_read(tmp_path, monkeypatch, model) -> None:
    """A `functools.cache`d or `cached_property` method's reads, or a cached function of another module held as
    a class attribute, were unseen: W = 1 -> 2 (or the cached function's `return W` -> `return W + 1`) kept it."""
    def project(w: int) -> dict[str, str]:
        return {"acts29d2.py": f"import functools\n\nW = {w}\n\n\n@functools.cache\ndef cached():\n    return {w}\n",
                "model29d2.py": model}
    _differ(tmp_path, monkeypatch, project, 1, 2)
