"""attdig2_31: upgrading memprox from 9b2283e must not retrain an unchanged plugin whose digest the upgrade did not
need to change. A module value read at import from a data file and hashed by its value at 9b2283e already (`CFG =
json.load(open(HERE / "cfg.json"))`, a yaml `with` block, `W = np.load(Path(__file__).parent / "w.npy")`) got the
file's content hashed beside its value by digest31: a new digest for the same model, so every stored run of it
trained again after the upgrade, with no notice (the digests below are 9b2283e's; at f19d395 all three differed).
An edit of the data file still gives a new digest, and one made since import is still refused in process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.code_digest import code_digest, code_read
from harness.code_source import edited_since_import
from tests.test_digest31_blind import _load

COMMON = "from torch import nn\n\n\ndef mlp(shape, n, width):\n    return nn.Linear(shape[0] * width, n)\n"
CASES = {
    "json beside the module": ("cfg2_31.json", {
        "m2_31.py": "import json\nfrom pathlib import Path\n\nfrom c2_31 import mlp\n\n"
                    "HERE = Path(__file__).resolve().parent\nCFG = json.load(open(HERE / 'cfg2_31.json'))\n\n\n"
                    "def build(shape, n):\n    return mlp(shape, n, CFG['width'])\n"}),
    "yaml in a with block": ("cfg2_31.yaml", {
        "m2_31.py": "import os\n\nimport yaml\n\nfrom c2_31 import mlp\n\n"
                    "with open(os.path.join(os.path.dirname(__file__), 'cfg2_31.yaml')) as f:\n"
                    "    CFG = yaml.safe_load(f)\n\n\ndef build(shape, n):\n    return mlp(shape, n, CFG['width'])\n"}),
    "npy beside the module": ("w2_31.npy", {
        "m2_31.py": "from pathlib import Path\n\nimport numpy as np\n\nfrom c2_31 import mlp\n\n"
                    "W = np.load(Path(__file__).parent / 'w2_31.npy')\n\n\n"
                    "def build(shape, n):\n    return mlp(shape, n, int(W[0]))\n"}),
}
#: code_digest(build) at 9b2283e, each file holding width 16 (`_data`).
AT_9B2283E = {"json beside the module": "d0c94b179fe0019d", "yaml in a with block": "a8c3714c68c0a353",
              "npy beside the module": "550cac27584cb167"}


def _data(folder: Path, name: str, width: int) -> None:
    """The data file `name` under `folder`, holding `width`."""
    if name.endswith(".json"):
        (folder / name).write_text(json.dumps({"width": width, "act": "relu"}), encoding="utf-8")
    elif name.endswith(".yaml"):
        (folder / name).write_text(f"width: {width}  # hidden units\nact: relu\n", encoding="utf-8")
    else:
        np.save(folder / name, np.array([width]))


@pytest.mark.parametrize("case", list(CASES))
def test_a_value_read_by_value_keeps_its_9b2283e_digest_and_its_file_edit_is_seen(tmp_path, monkeypatch,
                                                                                   case) -> None:
    name, files = CASES[case]
    _data(tmp_path, name, 16)
    build = _load(tmp_path, monkeypatch, {"c2_31.py": COMMON, **files}, "m2_31:build")
    before = code_digest(build)
    assert before == AT_9B2283E[case]  # the stored runs of 9b2283e are reused
    read = code_read(build)
    _data(tmp_path, name, 24)  # edited since import: this process holds 16, the file says 24
    assert [getattr(r, "__name__", "") for r in edited_since_import(read)] != []
    del sys.modules["m2_31"]
    assert code_digest(_load(tmp_path, monkeypatch, {"c2_31.py": COMMON, **files}, "m2_31:build")) != before
