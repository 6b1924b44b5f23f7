"""The code digest's blind spots closed in digest31 (each "changes" test failed before the change: equal digests,
so the old model's stored runs, their AUROC and FLOPs, were served as the edited one's):

- a user module imported by a call with its name written (`importlib.import_module("pkg.widths")`,
  `import_module(".widths", package=__package__)`, `__import__`), in the model's code or in a module it imports;
- the data file a module value is read from at import (`json.load(open("cfg.json"))`, a `.yaml`, `np.load`);
- a list or dict written empty in one user module that another user module fills at import.

And what must keep the digest (no new refusal, no retraining): a comment, a data file's layout or a touch with
the same content, another working directory, another string hash seed, a run that fills a cache or writes a log
file a module opened. Three readers (a path beside the module, one held by a module value, a `with` block) were
read by value before and pass at 9b2283e too: they pin that the file's layout keeps the digest."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.code_digest import code_digest, code_read, settings_read
from harness.code_source import edited_since_import


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch):
    """A module rewritten within the same second at the same size would be imported from its stale .pyc."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _load(tmp_path: Path, monkeypatch, files: dict[str, str], target: str):
    """`target` ("module:attribute") with `files` written under `tmp_path`, every module of them imported afresh."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    for name in list(sys.modules):
        if name.split(".")[0] in {n.split("/")[0].removesuffix(".py") for n in files}:
            monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def _three(tmp_path, monkeypatch, files: dict[str, str], old: str, new: str, target: str, kept: str) -> list[str]:
    """The digest of `target` with `files` as given, with `old` -> `new`, and with `old` -> `kept` (no edit)."""
    assert any(old in text for text in files.values())
    return [code_digest(_load(tmp_path, monkeypatch, {k: v.replace(old, to) for k, v in files.items()}, target))
            for to in (old, new, kept)]


WIDTHS = {"pkg31/__init__.py": "", "pkg31/widths.py": "W = 8\n"}
CALLED = {
    "import_module in the factory": "def build(s, n):\n    import importlib\n"
                                    "    return importlib.import_module('pkg31.widths').W\n",
    "import_module imported at the top": "from importlib import import_module\n"
                                         "def build(s, n):\n    return import_module('pkg31.widths').W\n",
    "__import__": "import sys\ndef build(s, n):\n    __import__('pkg31.widths')\n"
                  "    return sys.modules['pkg31.widths'].W\n",
    "relative, with package=__package__": None,
    "in a module the factory imports": "def build(s, n):\n    from pkg31 import loader\n    return loader.widths.W\n",
}


@pytest.mark.parametrize("case", list(CALLED))
def test_a_module_imported_by_a_call_is_read(tmp_path, monkeypatch, case) -> None:
    files = dict(WIDTHS, **{"pkg31/loader.py": "import importlib\nwidths = importlib.import_module('pkg31.widths')\n"})
    if CALLED[case] is None:
        files["pkg31/model.py"] = "import importlib\ndef build(s, n):\n" \
                                  "    return importlib.import_module('.widths', package=__package__).W\n"
        target = "pkg31.model:build"
    else:
        files["m31call.py"] = CALLED[case]
        target = "m31call:build"
    before, edited, commented = _three(tmp_path, monkeypatch, files, "W = 8", "W = 16", target, "W = 8  # a comment")
    assert before != edited  # 9b2283e: equal
    assert before == commented


def test_a_module_imported_by_a_call_and_edited_since_is_refused_in_process(tmp_path, monkeypatch) -> None:
    build = _load(tmp_path, monkeypatch, dict(WIDTHS, **{"m31edit.py": CALLED["import_module in the factory"]}),
                  "m31edit:build")
    assert build((1,), 2) == 8 and edited_since_import(code_read(build)) == []
    (tmp_path / "pkg31/widths.py").write_text("W = 16  # longer\n")
    assert edited_since_import(code_read(build)) == ["pkg31.widths"]


def test_an_installed_or_standard_module_imported_by_a_call_adds_nothing(tmp_path, monkeypatch) -> None:
    """Pins what stays: `import_module("json")` or a name made as the code runs reads nothing more."""
    from harness.code_digest import _code, _run

    build = _load(tmp_path, monkeypatch, {"m31std.py": "import importlib\nNAME = 'pkg31.widths'\n"
                                                       "def build(s, n):\n    importlib.import_module('json')\n"
                                                       "    return importlib.import_module(NAME)\n"}, "m31std:build")
    assert "imports" not in _run(_code(build, {}, {}))


READERS = {
    "json.load(open(...)) from the working directory": (
        {"c31.json": '{"w": 8, "b": [1, 2]}', "m31j.py": "import json\nCFG = json.load(open('c31.json'))\n"
                                                          "def build(s, n):\n    return CFG['w']\n"}, '"w": 8'),
    "a path beside the module (__file__)": (
        {"c31.json": '{"w": 8, "b": [1, 2]}', "m31j.py": "import json\nfrom pathlib import Path\n"
                                                          "HERE = Path(__file__).parent\n"
                                                          "CFG = json.loads((HERE / 'c31.json').read_text())\n"
                                                          "def build(s, n):\n    return CFG['w']\n"}, '"w": 8'),
    "with open(...) as f: yaml.safe_load(f)": (
        {"c31.yaml": "w: 8\nb: [1, 2]\n", "m31j.py": "import yaml\nwith open('c31.yaml') as f:\n"
                                                     "    CFG = yaml.safe_load(f)\n"
                                                     "def build(s, n):\n    return CFG['w']\n"}, "w: 8"),
    "a path held by a module value": (
        {"c31.json": '{"w": 8, "b": [1, 2]}', "m31j.py": "import json\nimport os\n"
                                                          "P = os.path.join(os.path.dirname(__file__), 'c31.json')\n"
                                                          "CFG = json.load(open(P))\n"
                                                          "def build(s, n):\n    return CFG\n"}, '"w": 8'),
    "by a function of the module": (
        {"c31.json": '{"w": 8, "b": [1, 2]}', "m31j.py": "import json\ndef load():\n"
                                                          "    return json.load(open('c31.json'))\nCFG = load()\n"
                                                          "def build(s, n):\n    return CFG['w']\n"}, '"w": 8'),
    "a namespace made from a file": (
        {"c31.json": '{"w": 8, "b": [1, 2]}', "m31j.py": "import json\nfrom types import SimpleNamespace\n"
                                                          "CFG = SimpleNamespace(**json.load(open('c31.json')))\n"
                                                          "def build(s, n):\n    return CFG.w\n"}, '"w": 8'),
}


@pytest.mark.parametrize("case", list(READERS))
def test_the_data_file_a_module_value_is_read_from_is_read(tmp_path, monkeypatch, case) -> None:
    files, old = READERS[case]
    monkeypatch.chdir(tmp_path)
    data = next(n for n in files if not n.endswith(".py"))
    digests = _three(tmp_path, monkeypatch, files, old, old.replace("8", "16"), "m31j:build", old)
    assert digests[0] != digests[1]  # 9b2283e: equal
    assert digests[0] == digests[2]
    layout = files[data].replace("[1, 2]", "[1,\n    2]") + ("  # a comment\n" if data.endswith(".yaml") else "\n")
    (tmp_path / data).write_text(layout)  # another layout (and a comment) of the same values
    assert code_digest(_load(tmp_path, monkeypatch, {k: v for k, v in files.items() if k != data}, "m31j:build")) \
        == digests[0]


def test_reordering_a_json_file_s_keys_gives_a_new_digest(tmp_path, monkeypatch) -> None:
    """Pins the documented cost: a dict's order is kept (a model iterating it builds its layers in that order, and
    draws their initial weights in it), so reordering keys trains again rather than serve another model's runs."""
    monkeypatch.chdir(tmp_path)
    files = dict(READERS["json.load(open(...)) from the working directory"][0])
    before = code_digest(_load(tmp_path, monkeypatch, files, "m31j:build"))
    files["c31.json"] = '{"b": [1, 2], "w": 8}'
    assert code_digest(_load(tmp_path, monkeypatch, files, "m31j:build")) != before


def test_an_array_loaded_from_a_file_is_read_by_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = {"m31np.py": "import numpy as np\nW = np.load('w31.npy')\ndef build(s, n):\n    return W\n"}
    digests = []
    for values in ([1.0, 2.0], [1.0, 3.0], [1.0, 2.0]):
        np.save(tmp_path / "w31.npy", np.array(values))
        digests.append(code_digest(_load(tmp_path, monkeypatch, files, "m31np:build")))
    assert digests[0] != digests[1]  # 9b2283e: equal
    assert digests[0] == digests[2]  # written anew with the same values
    build = _load(tmp_path, monkeypatch, files, "m31np:build")
    build.__globals__["W"][0] = 5.0  # a run changing the array in place: the digest reads the file
    assert code_digest(build) == digests[0]


def test_a_data_file_touched_or_edited_since_import(tmp_path, monkeypatch) -> None:
    """A touch with the same bytes keeps the digest and passes the in-process check; an edit is refused there."""
    monkeypatch.chdir(tmp_path)
    build = _load(tmp_path, monkeypatch, READERS["json.load(open(...)) from the working directory"][0], "m31j:build")
    before = code_digest(build)
    os.utime(tmp_path / "c31.json", ns=(10**18, 10**18))
    assert code_digest(build) == before and edited_since_import(code_read(build)) == []
    (tmp_path / "c31.json").write_text('{"w": 16, "b": [1, 2]}')
    assert code_digest(build) != before
    assert edited_since_import(code_read(build)) == ["CFG (read from c31.json)"]


def test_a_text_that_names_no_file_adds_nothing(tmp_path, monkeypatch) -> None:
    """Pins what stays: a statement whose text constants name no file is read as before."""
    from harness.code_digest import _code, _run

    monkeypatch.chdir(tmp_path)
    build = _load(tmp_path, monkeypatch, {"m31nf.py": "ACTS = dict(relu='relu', gelu='gelu')\n"
                                                      "def build(s, n):\n    return ACTS\n"}, "m31nf:build")
    assert "reads file" not in _run(_code(build, {}, {}))


def test_a_file_a_module_opens_to_write_is_not_read(tmp_path, monkeypatch) -> None:
    """Pins what stays: a log a run appends to (`open("train.log", "a")`) is no data the model was built from."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t31.log").write_text("start\n")
    build = _load(tmp_path, monkeypatch, {"m31log.py": "LOG = open('t31.log', 'a')\n"
                                                       "def opener():\n    return open('t31.log', mode='a')\n"
                                                       "LOG2 = opener()\n"
                                                       "def build(s, n):\n    LOG.write('built\\n')\n"
                                                       "    LOG.flush()\n    return n, LOG2\n"}, "m31log:build")
    before = code_digest(build)
    build((1,), 2)
    assert (tmp_path / "t31.log").read_text() == "start\nbuilt\n"
    assert code_digest(build) == before and edited_since_import(code_read(build)) == []
    build.__globals__["LOG"].close()
    build.__globals__["LOG2"].close()


REGISTRY = "BLOCKS = []\nSIZES = {}\ndef register(f):\n    BLOCKS.append(f)\n    return f\n"
FILLERS = {
    "through the module": ("import r31\nr31.BLOCKS.append(8)\n", "append(8)", "append(16)"),
    "by the name imported": ("from r31 import BLOCKS as B\nB.append(8)\n", "append(8)", "append(16)"),
    "a class of the filler's": ("import r31\nclass Conv:\n    def f(self, x):\n        return x * 2\n"
                                "r31.BLOCKS.append(Conv)\n", "x * 2", "x * 3"),
    "by a registering decorator": ("import r31\n@r31.register\ndef act(x):\n    return x * 2\n", "x * 2", "x * 3"),
    "in a loop": ("import r31 as r\nfor w in (8, 16):\n    r.BLOCKS.append(w)\n", "(8, 16)", "(8, 32)"),
    "a dict's item": ("import r31\nr31.SIZES['head'] = 8\n", "= 8", "= 16"),
}


@pytest.mark.parametrize("case", list(FILLERS))
def test_a_list_another_module_fills_at_import_is_read(tmp_path, monkeypatch, case) -> None:
    filler, old, new = FILLERS[case]
    files = {"r31.py": REGISTRY, "f31.py": filler,
             "m31f.py": "import r31\nimport f31\ndef build(s, n):\n    return r31.BLOCKS, r31.SIZES\n"}
    before, edited = _three(tmp_path, monkeypatch, files, old, new, "m31f:build", old)[:2]
    commented = dict(files, **{"f31.py": "# a comment\n" + filler.replace("\n", "  # a comment\n\n", 1)})
    assert before != edited  # 9b2283e: equal
    assert before == code_digest(_load(tmp_path, monkeypatch, commented, "m31f:build"))
    named = settings_read(_load(tmp_path, monkeypatch, files, "m31f:build"))  # what a refusal names
    assert ("r31.SIZES" if "SIZES" in filler else "r31.BLOCKS") in named  # by its value, else its fillers


def test_a_filler_edited_since_import_is_refused_in_process_and_a_run_s_fill_keeps_the_digest(tmp_path, monkeypatch):
    files = {"r31.py": REGISTRY + "CACHE = {}\n", "f31.py": FILLERS["through the module"][0] +
             "def remember(k):\n    import r31\n    r31.CACHE[k] = k\n",
             "m31f.py": "import r31\nimport f31\ndef build(s, n):\n    f31.remember(n)\n"
                        "    return r31.BLOCKS, r31.CACHE\n"}
    build = _load(tmp_path, monkeypatch, files, "m31f:build")
    before = code_digest(build)
    build((1,), 3)  # fills CACHE: a cache a run fills keeps the digest
    assert code_digest(build) == before and edited_since_import(code_read(build)) == []
    (tmp_path / "f31.py").write_text(files["f31.py"].replace("append(8)", "append(16)"))
    assert edited_since_import(code_read(build)) == ["f31 (fills BLOCKS at import)"]


FRESH = {
    "pkg31/__init__.py": "", "pkg31/widths.py": "W = 8\n", "c31.json": '{"w": 8}',
    "r31.py": REGISTRY, "f31.py": "import r31\nfrom r31 import SIZES\nSIZES.update({'b': {1, 2}, 'a': 3})\n",
    "m31fresh.py": "import importlib\nimport json\nfrom pathlib import Path\nimport r31\nimport f31\n"
                   "CFG = json.loads((Path(__file__).parent / 'c31.json').read_text())\n"
                   "def build(s, n):\n    return importlib.import_module('pkg31.widths').W, CFG, r31.SIZES\n",
}


def test_a_fresh_process_elsewhere_under_another_hash_seed_gets_the_same_digest(tmp_path, monkeypatch) -> None:
    """The local and Ray executors compare this digest with a fresh process's: another working directory or
    string hash seed must not differ (it would refuse the model)."""
    build = _load(tmp_path, monkeypatch, FRESH, "m31fresh:build")
    here = code_digest(build)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = "import m31fresh; from harness.code_digest import code_digest; print(code_digest(m31fresh.build))"
    env = {**os.environ, "PYTHONHASHSEED": "7",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(harness.__file__).parents[1])])}
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                           env=env, cwd=elsewhere).stdout.strip()
    assert fresh == here
    json.dumps(here)  # a text digest
