"""attdig31: the code digest's digest31 reads (data files read at import, modules imported by a call, lists another
module fills) attacked as users' projects use them. A false change (a log or cache a run writes read as the model's
data) trains the model again at every run and is refused under `--executor inprocess`; a missed edit serves the old
model's stored runs as the edited one's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.code_digest import code_digest, code_read
from harness.code_source import edited_since_import
from tests.test_digest31_blind import _load


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.chdir(tmp_path)


def _digest(tmp_path: Path, monkeypatch, files: dict[str, str], target: str = "m31a:build") -> str:
    return code_digest(_load(tmp_path, monkeypatch, files, target))


def _same_after_run(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    """The digest before a run, after it, and in a fresh import after it are one; no in-process refusal."""
    build = _load(tmp_path, monkeypatch, files, "m31a:build")
    before = code_digest(build)
    build((1,), 2)
    assert code_digest(build) == before
    assert edited_since_import(code_read(build)) == []
    if hasattr(build.__globals__.get("LOG"), "close"):
        build.__globals__["LOG"].close()
    fresh = _load(tmp_path, monkeypatch, {k: v for k, v in files.items() if k.endswith(".py")}, "m31a:build")
    assert code_digest(fresh) == before
    if hasattr(fresh.__globals__.get("LOG"), "close"):
        fresh.__globals__["LOG"].close()


CHURN = {
    "a log opened by Path.open('a')": {
        "m31a.py": "import json\nfrom pathlib import Path\nCFG = json.load(open('c31.json'))\n"
                   "LOG = Path('t31.log').open('a')\n"
                   "def build(s, n):\n    LOG.write('built\\n')\n    LOG.flush()\n    return CFG['w']\n",
        "c31.json": '{"w": 8}', "t31.log": "start\n"},
    "a setup function naming its log file": {
        "m31a.py": "import json\nimport logging\n"
                   "def setup():\n    logging.getLogger('m31a').addHandler(logging.FileHandler('t31.log'))\n"
                   "    return json.load(open('c31.json'))\n"
                   "CFG = setup()\n"
                   "def build(s, n):\n    with open('t31.log', 'a') as f:\n        f.write('built\\n')\n"
                   "    return CFG['w']\n",
        "c31.json": '{"w": 8}', "t31.log": "start\n"},
    "a cache loaded at import and saved by the run": {
        "m31a.py": "import json\nimport os\n"
                   "CACHE = json.load(open('cache31.json')) if os.path.exists('cache31.json') else {}\n"
                   "def build(s, n):\n    CACHE[str(n)] = n\n    json.dump(CACHE, open('cache31.json', 'w'))\n"
                   "    return CACHE\n",
        "cache31.json": "{}"},
    "a counter read at import, bumped by the run": {
        "m31a.py": "from pathlib import Path\nSTATE = {'runs': int(Path('n31.txt').read_text())}\n"
                   "def build(s, n):\n    Path('n31.txt').write_text(str(STATE['runs'] + 1))\n    return STATE\n",
        "n31.txt": "0"},
    "a cache dict loaded from the path held by a module value": {
        "m31a.py": "import json\nimport os\nCACHE_PATH = 'cache31.json'\n"
                   "CACHE = json.load(open(CACHE_PATH)) if os.path.exists(CACHE_PATH) else {}\n"
                   "def build(s, n):\n    CACHE[str(n)] = n\n    with open(CACHE_PATH, 'w') as f:\n"
                   "        json.dump(CACHE, f)\n    return CACHE\n"},
    "open(__file__) for its own source": {
        "m31a.py": "SRC = open(__file__).read().splitlines()\ndef build(s, n):\n    return len(SRC)\n"},
}


@pytest.mark.parametrize("case", list(CHURN))
def test_what_a_run_writes_keeps_the_digest(tmp_path, monkeypatch, case) -> None:
    _same_after_run(tmp_path, monkeypatch, CHURN[case])


MISSES = {
    "Path.read_text + json.loads": ({"m31a.py": "import json\nfrom pathlib import Path\n"
                                                "CFG = json.loads(Path('c31.json').read_text())\n"
                                                "def build(s, n):\n    return CFG['w']\n",
                                     "c31.json": '{"w": 8}'}, '"w": 8', '"w": 16'),
    "pd.read_csv": ({"m31a.py": "import pandas as pd\nDF = pd.read_csv('t31.csv')\n"
                                "def build(s, n):\n    return DF['w'][0]\n", "t31.csv": "w\n8\n"}, "8", "16"),
    "torch.load of weights": ({"m31a.py": "import torch\nSTATE = torch.load('w31.txt', weights_only=True)\n"
                                          "def build(s, n):\n    return STATE\n", "w31.txt": "8"}, "8", "16"),
    "load_state_dict(torch.load(...)) into a module global": (
        {"m31a.py": "import torch\nfrom torch import nn\nNET = nn.Linear(1, 1)\n"
                    "NET.load_state_dict(torch.load('w31.txt', weights_only=True))\n"
                    "def build(s, n):\n    return NET\n", "w31.txt": "8"}, "8", "16"),
    "configparser": ({"m31a.py": "import configparser\nCFG = configparser.ConfigParser()\nCFG.read('c31.ini')\n"
                                 "def build(s, n):\n    return CFG.getint('m', 'w')\n", "c31.ini": "[m]\nw = 8\n"},
                     "w = 8", "w = 16"),
    "tomllib": ({"m31a.py": "import tomllib\nwith open('c31.toml', 'rb') as f:\n    CFG = tomllib.load(f)\n"
                            "def build(s, n):\n    return CFG['w']\n", "c31.toml": "w = 8\n"}, "w = 8", "w = 16"),
    "a registry filled by a decorator in a module __init__ imports": (
        {"pkg31a/__init__.py": "from . import blocks\n",
         "pkg31a/registry.py": "REG = {}\ndef register(name):\n    def deco(cls):\n        REG[name] = cls\n"
                               "        return cls\n    return deco\n",
         "pkg31a/blocks.py": "from .registry import register\n@register('conv')\nclass Conv:\n"
                             "    width = 8\n",
         "m31a.py": "import pkg31a\nfrom pkg31a.registry import REG\ndef build(s, n):\n    return REG['conv']\n"},
        "width = 8", "width = 16"),
    "CFG = get_config(), a function reading the file": (
        {"m31a.py": "import json\ndef get_config():\n    with open('c31.json') as f:\n        return json.load(f)\n"
                    "CFG = get_config()\ndef build(s, n):\n    return CFG['w']\n", "c31.json": '{"w": 8}'},
        '"w": 8', '"w": 16'),
    "a loader that also appends to a log": (
        {"m31a.py": "import json\ndef load():\n    with open('t31.log', 'a') as log:\n        log.write('load\\n')\n"
                    "    return json.load(open('c31.json'))\nCFG = load()\ndef build(s, n):\n    return CFG['w']\n",
         "c31.json": '{"w": 8}'}, '"w": 8', '"w": 16'),
    "a config the run also saves a copy of elsewhere": (
        {"m31a.py": "import json\nfrom pathlib import Path\nCFG_PATH = 'c31.json'\nCFG = json.load(open(CFG_PATH))\n"
                    "WIDTHS = [CFG['w']] * 2\n"
                    "def build(s, n):\n    Path('out31.json').write_text(json.dumps(CFG))\n    return WIDTHS\n",
         "c31.json": '{"w": 8}'}, '"w": 8', '"w": 16'),
    "a registry imported through its attribute": (
        {"pkg31a/__init__.py": "from . import blocks\n",
         "pkg31a/registry.py": "REG = {}\ndef register(name):\n    def deco(cls):\n        REG[name] = cls\n"
                               "        return cls\n    return deco\n",
         "pkg31a/blocks.py": "from .registry import register\n@register('conv')\nclass Conv:\n    width = 8\n",
         "m31a.py": "from pkg31a import registry\ndef build(s, n):\n    return registry.REG['conv']\n"},
        "width = 8", "width = 16"),
}


@pytest.mark.parametrize("case", list(MISSES))
def test_a_typical_edit_gives_a_new_digest(tmp_path, monkeypatch, case) -> None:
    files, old, new = MISSES[case]
    if case.startswith("torch"):
        import torch
        torch.save({"w": torch.tensor([8.0])}, tmp_path / "w31.txt")
        files = {k: v for k, v in files.items() if k != "w31.txt"}
        before = _digest(tmp_path, monkeypatch, files)
        torch.save({"w": torch.tensor([16.0])}, tmp_path / "w31.txt")
        assert _digest(tmp_path, monkeypatch, files) != before
        return
    if case.startswith("load_state_dict"):
        import torch
        files = {k: v for k, v in files.items() if k != "w31.txt"}
        digests = []
        for w in (8.0, 16.0):
            torch.save({"weight": torch.tensor([[w]]), "bias": torch.tensor([0.0])}, tmp_path / "w31.txt")
            digests.append(_digest(tmp_path, monkeypatch, files))
        assert digests[0] != digests[1]
        return
    before = _digest(tmp_path, monkeypatch, files)
    after = _digest(tmp_path, monkeypatch, {k: v.replace(old, new) for k, v in files.items()})
    assert before != after


def test_a_file_the_system_makes_as_it_is_read_is_not_read(tmp_path, monkeypatch) -> None:
    """`/proc/cpuinfo` holds each core's current MHz: read by bytes, a fresh worker's digest differed (refused)."""
    from harness.code_digest import _code, _run

    build = _load(tmp_path, monkeypatch, {"m31a.py": "from types import SimpleNamespace\n"
                                                     "HOST = SimpleNamespace(cores=open('/proc/cpuinfo').read()"
                                                     ".count('processor'))\n"
                                                     "def build(s, n):\n    return HOST.cores\n"}, "m31a:build")
    assert "reads file" not in _run(_code(build, {}, {}))
