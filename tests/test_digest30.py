"""The code digest's blind spots closed in digest30 (each test failed at da3a1ae, before the change, unless it
says it pins what stays): an edit there kept the digest, so the old model's stored runs (their AUROC, FLOPs)
were served as the edited one's.

- a set inside a list, dict or partial that a class attribute, an instance or a partial holds was its type alone;
- an array or path held by an instance, a list or a module global was its type alone or nothing;
- of two classes of one name in a module, the first one's source was read for the second;
- a module list filled by a loop, a `with` block, a registering decorator or a module function's call, or made
  by a call of a user function (`W = make_widths()`), was read as its written text alone (`W = []`);
- a user module imported inside a function was not read at all.

Pinned (passing at da3a1ae too): a set's digest under every hash seed, the first of two same-name classes
kept under another name and a method-less one, a cache a run fills, a set a default or closure holds, an
installed or standard module imported in a function."""

from __future__ import annotations

import sys

import pytest
from test_digest_attack27 import _module

from harness.code_digest import code_digest, settings_read

HOLDER = "class C:\n    def __init__(self, v):\n        self.v = v\n"
BUILD = "\ndef build(s, n):\n    return CFG\n"


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    """A module rewritten within the same second at the same size would be imported from its stale .pyc."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _pair(tmp_path, monkeypatch, name: str, source: str, old: str, new: str, attribute: str) -> list[str]:
    """The digest of `attribute` of module `name` written from `source`, then with `old` -> `new`."""
    assert old in source
    return [code_digest(getattr(_module(tmp_path, monkeypatch, name, text), attribute))
            for text in (source, source.replace(old, new))]


HELD = {
    "a set in a class attribute's list": ("B = 2\nclass Net:\n    T = [{1, B}]\n", "B = 2", "B = 5", "Net"),
    "a set in an instance's list": (HOLDER + "CFG = C([{1, 2}])\ndef build(s, n):\n    return CFG\n",
                                    "{1, 2}", "{1, 5}", "build"),
    "a set in a partial's list": ("import functools\ndef f(s, n, t):\n    return t\n"
                                  "build = functools.partial(f, t=[{1, 2}])\n",
                                  "{1, 2}", "{1, 5}", "build"),
    "an array an instance holds": ("import numpy as np\n" + HOLDER + "CFG = C(np.arange(2))" + BUILD,
                                   "arange(2)", "arange(3)", "build"),
    "an array in an instance's list": ("import numpy as np\n" + HOLDER +
                                       "CFG = C([np.arange(2)])\ndef build(s, n):\n    return CFG\n",
                                       "arange(2)", "arange(3)", "build"),
    "a path an instance holds": ("from pathlib import Path\n" + HOLDER + "CFG = C(Path('a'))" + BUILD,
                                 "Path('a')", "Path('b')", "build"),
    "a module's array": ("import numpy as np\nB = 2\nA = np.arange(B)\ndef build(s, n):\n    return A\n",
                         "B = 2", "B = 3", "build"),
    "an array in a module's list": ("import numpy as np\nB = 2\nA = [np.arange(B)]\ndef build(s, n):\n    return A\n",
                                    "B = 2", "B = 3", "build"),
    "a module's path": ("from pathlib import Path\nP = Path('a')\ndef build(s, n):\n    return P\n",
                        "Path('a')", "Path('b')", "build"),
    "a dataclass holding an array": ("import numpy as np, dataclasses\n@dataclasses.dataclass\nclass D:\n    a: int\n"
                                     "CFG = D(np.arange(2))" + BUILD,
                                     "arange(2)", "arange(3)", "build"),
}


@pytest.mark.parametrize("case", list(HELD))
def test_a_held_set_array_or_path_is_read_by_its_content(tmp_path, monkeypatch, case) -> None:
    source, old, new, attribute = HELD[case]
    before, after = _pair(tmp_path, monkeypatch, f"held30_{list(HELD).index(case)}", source, old, new, attribute)
    assert before != after  # da3a1ae: equal


def test_a_module_array_is_named_where_a_fresh_process_differs(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "arr30", "import numpy as np\nN = 2\nA = np.zeros(N, dtype=np.int8)\n"
                                                     "def build(s, n):\n    return A\n")
    import hashlib
    assert settings_read(module.build) == {"arr30.A": f"array(int8, (2,), {hashlib.sha256(bytes(2)).hexdigest()})"}


def test_a_set_of_text_in_a_list_has_one_digest_under_every_hash_seed(tmp_path) -> None:
    import os
    import subprocess
    from pathlib import Path

    import harness
    (tmp_path / "seed30.py").write_text("NAMES = tuple('abcdefgh')\nclass Net:\n    T = [set(NAMES)]\n")
    script = "import seed30; from harness.code_digest import code_digest; print(code_digest(seed30.Net))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(harness.__file__).parents[1])])}
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                              env={**env, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2", "3")}
    assert len(digests) == 1


TWICE = {
    "the second class's method": ("class Net:\n    W = 1\nclass Net:\n    def f(self):\n        return 8\n",
                                  "return 8", "return 16", "Net"),
    "the second class's literal, no method": ("class Net:\n    W = 1\nclass Net:\n    W = 2\n    V = 3\n",
                                              "V = 3", "V = 4", "Net"),
    "the first class kept under another name": ("class Net:\n    def f(self):\n        return 8\nOld = Net\n"
                                                "class Net:\n    def f(self):\n        return 1\n",
                                                "return 8", "return 16", "Old"),
    "a nested class of the second outer class": ("class A:\n    class B:\n        pass\nclass A:\n    class B:\n"
                                                 "        def f(self):\n            return 8\n",
                                                 "return 8", "return 16", "A"),
}


@pytest.mark.parametrize("case", list(TWICE))
def test_of_two_classes_of_one_name_the_one_digested_is_read(tmp_path, monkeypatch, case) -> None:
    source, old, new, attribute = TWICE[case]
    before, after = _pair(tmp_path, monkeypatch, f"twice30_{list(TWICE).index(case)}", source, old, new, attribute)
    assert before != after  # da3a1ae: equal (the first class's source was read)


def test_the_other_class_of_the_same_name_is_not_read(tmp_path, monkeypatch) -> None:
    """Pins what stays: an edit of the class not digested keeps the digest, and its source is the right one."""
    from harness.code_source import source
    text = "class Net:\n    def f(self):\n        return 1\nOld = Net\nclass Net:\n    def g(self):\n        return 8\n"
    before, after = _pair(tmp_path, monkeypatch, "twice30_other", text, "return 1", "return 5", "Net")
    assert before == after
    module = _module(tmp_path, monkeypatch, "twice30_src", text)
    assert source(module.Net) == "class Net:\n    def g(self):\n        return 8\n"
    assert source(module.Old) == "class Net:\n    def f(self):\n        return 1\n"


FILLED = {
    "a list filled by a loop": ("W = []\nfor i in range(3):\n    W.append(i * 8)\ndef build(s, n):\n    return W\n",
                                "i * 8", "i * 16"),
    "a list a loop fills with text": ("W = []\nfor i in range(2):\n    W.append(str(i) + 'a')\n"
                                      "def build(s, n):\n    return W\n", "'a'", "'b'"),
    "a list a function makes": ("def make_widths():\n    return [8, 16]\nW = make_widths()\n"
                                "def build(s, n):\n    return W\n",
                                "[8, 16]", "[8, 32]"),
    "a dict a decorator fills": ("ACTS = {}\ndef reg(f):\n    ACTS[f.__name__] = f\n    return f\n@reg\ndef relu(x):\n"
                                 "    return x * 1\ndef build(s, n):\n    return ACTS['relu'](n)\n", "x * 1", "x * 2"),
    "a list a call of a module function fills": ("W = []\ndef add(w):\n    W.append(w)\nadd(8)\n"
                                                 "def build(s, n):\n    return W\n", "add(8)", "add(16)"),
    "a list a with block fills": ("W = []\nwith open(__file__) as f:\n    W.append(8)\n"
                                  "def build(s, n):\n    return W\n",
                                  "append(8)", "append(16)"),
}


@pytest.mark.parametrize("case", list(FILLED))
def test_a_module_list_filled_by_a_loop_call_or_decorator_is_read(tmp_path, monkeypatch, case) -> None:
    source, old, new = FILLED[case]
    name = f"filled30_{list(FILLED).index(case)}"
    before, after = _pair(tmp_path, monkeypatch, name, source, old, new, "build")
    assert before != after  # da3a1ae: equal
    commented = _pair(tmp_path, monkeypatch, name, source, "def build", "# a comment\ndef build", "build")
    assert commented[0] == commented[1] == before


def test_a_list_a_function_of_another_module_makes_is_read(tmp_path, monkeypatch) -> None:
    (tmp_path / "cfg30.py").write_text("def widths():\n    return [8, 16]\n")
    monkeypatch.delitem(sys.modules, "cfg30", raising=False)
    first = code_digest(_module(tmp_path, monkeypatch, "made30", "import cfg30\nW = cfg30.widths()\n"
                                                                  "def build(s, n):\n    return W\n").build)
    (tmp_path / "cfg30.py").write_text("def widths():\n    return [8, 32]\n")
    monkeypatch.delitem(sys.modules, "cfg30", raising=False)
    second = code_digest(_module(tmp_path, monkeypatch, "made30", "import cfg30\nW = cfg30.widths()\n"
                                                                   "def build(s, n):\n    return W\n").build)
    assert first != second  # da3a1ae: equal


def test_a_cache_a_run_fills_keeps_its_digest(tmp_path, monkeypatch) -> None:
    """Pins what stays: a dict written empty and filled by a function the run calls is not read by value."""
    module = _module(tmp_path, monkeypatch, "cache30", "CACHE = {}\ndef remember(k, v):\n    CACHE[k] = v\n"
                                                       "def build(s, n):\n    remember(n, n)\n    return CACHE\n")
    before = code_digest(module.build)
    module.build((1,), 3)
    assert module.CACHE == {3: 3} and code_digest(module.build) == before


def _package(tmp_path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")


IMPORTED = {
    "from a package import a module": "def build(s, n):\n    from pkg30 import widths\n    return widths.W\n",
    "import a package's module": "def build(s, n):\n    import pkg30.widths\n    return pkg30.widths.W\n",
    "from a module import a value": "def build(s, n):\n    from pkg30.widths import W\n    return W\n",
    "in a method, as an alias": "class Net:\n    def __init__(self):\n        import pkg30.widths as w\n"
                                "        self.w = w.W\n",
    "through the module it imports": "def build(s, n):\n    from pkg30 import wide\n    return wide.V\n",
}


@pytest.mark.parametrize("case", list(IMPORTED))
def test_a_module_imported_inside_a_function_is_read(tmp_path, monkeypatch, case) -> None:
    digests = []
    for width in ("8", "16", "8  # a comment"):
        _package(tmp_path, {"pkg30/__init__.py": "", "pkg30/widths.py": f"W = {width}\n",
                            "pkg30/wide.py": "from .widths import W\nV = W * 2\n"})
        for name in ("pkg30", "pkg30.widths", "pkg30.wide"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        module = _module(tmp_path, monkeypatch, f"imp30_{list(IMPORTED).index(case)}", IMPORTED[case])
        digests.append(code_digest(getattr(module, "build", None) or module.Net))
    assert digests[0] != digests[1]  # da3a1ae: equal
    assert digests[0] == digests[2]  # a comment is no edit


def test_an_imported_module_s_digest_is_one_before_and_after_it_runs_and_in_a_fresh_process(tmp_path, monkeypatch):
    import os
    import subprocess
    from pathlib import Path

    import harness
    from harness import code_digest_imports
    _package(tmp_path, {"pkg30b/__init__.py": "", "pkg30b/widths.py": "import numpy\nW = 8\n"})
    module = _module(tmp_path, monkeypatch, "imp30_fresh", "def build(s, n):\n    from pkg30b import widths\n"
                                                          "    import numpy, json\n    return widths.W\n")
    parses = code_digest_imports.PARSES[0]
    before = code_digest(module.build)
    assert "pkg30b.widths" not in sys.modules and code_digest_imports.PARSES[0] == parses + 2  # the two user files
    assert module.build((1,), 2) == 8 and "pkg30b.widths" in sys.modules
    assert code_digest(module.build) == before and code_digest_imports.PARSES[0] == parses + 2  # parsed once
    script = "import imp30_fresh; from harness.code_digest import code_digest; print(code_digest(imp30_fresh.build))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(harness.__file__).parents[1])])}
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                           env=env).stdout.strip()
    assert fresh == before


def test_an_installed_or_standard_module_imported_inside_a_function_keeps_the_digest(tmp_path, monkeypatch) -> None:
    """Pins what stays: numpy and json imported in the body add nothing (the digest as before)."""
    plain = _module(tmp_path, monkeypatch, "imp30_plain", "def build(s, n):\n    return n\n")
    lazy = _module(tmp_path, monkeypatch, "imp30_lazy", "def build(s, n):\n    return n\n")
    assert code_digest(plain.build) == code_digest(lazy.build)
    from harness.code_digest import _code, _run
    text = _run(_code(_module(tmp_path, monkeypatch, "imp30_np", "def build(s, n):\n    import numpy, json\n"
                                                                 "    from torch import nn\n    return n\n").build,
                      {}, {}))
    assert "imports" not in text


def test_a_module_imported_inside_a_function_and_edited_since_is_refused_in_process(tmp_path, monkeypatch) -> None:
    from harness.code_digest import code_read
    from harness.code_source import edited_since_import
    _package(tmp_path, {"pkg30c/__init__.py": "", "pkg30c/widths.py": "W = 8\n"})
    module = _module(tmp_path, monkeypatch, "imp30_edit", "def build(s, n):\n    from pkg30c import widths\n"
                                                         "    return widths.W\n")
    module.build((1,), 2)
    assert edited_since_import(code_read(module.build)) == []
    _package(tmp_path, {"pkg30c/widths.py": "W = 16  # longer\n"})
    assert edited_since_import(code_read(module.build)) == ["pkg30c.widths"]


def test_a_set_a_run_fills_in_a_default_or_closure_keeps_its_digest(tmp_path, monkeypatch) -> None:
    """Pins what stays: a set that is a default value or a closure cell is state a run fills (its type alone)."""
    module = _module(tmp_path, monkeypatch, "state30", """
def once(f):
    warned = set()
    def wrapper(s, n, seen=set()):
        warned.add(n)
        seen.add(n)
        return f(s, n)
    return wrapper
@once
def build(s, n):
    return n
""")
    before = code_digest(module.build)
    module.build((1,), 3)
    assert code_digest(module.build) == before
