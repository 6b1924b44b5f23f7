"""A top-level setting through an installed module written as an annotated assignment (`a.b: T = v`) is read
by the digest like `a.b = v`: a pre-filter skipped the file before its parse, so an edit kept the digest."""

from __future__ import annotations

import sys

import torch
from test_digest_attack27 import _module

from harness.code_digest import code_digest


def test_an_annotated_setting_through_torch_is_read(tmp_path, monkeypatch) -> None:
    was = torch.backends.cudnn.benchmark
    digests = []
    try:
        for value in ("False", "True"):
            monkeypatch.delitem(sys.modules, "eff30", raising=False)
            module = _module(tmp_path, monkeypatch, "eff30", "import torch\n"
                             f"torch.backends.cudnn.benchmark: bool = {value}\n"
                             "def build(s, n):\n    return torch.nn.Linear(2, n)\n")
            digests.append(code_digest(module.build))
    finally:
        torch.backends.cudnn.benchmark = was
    assert digests[0] != digests[1]
