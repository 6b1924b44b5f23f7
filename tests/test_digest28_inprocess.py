"""`--executor inprocess` and the code digest (digest28). A model's digest reads its module's file
as it is now, while this process trains the code it imported: with the file edited since (a notebook
user's edit without a reload), the old model's runs were stored where the edited model's are looked
up, and a fresh process building the new model was served them (f410fdc: no check under inprocess;
the other executors' workers import the file afresh and train what it says). Refused now, with no
process started; a value set anew in every process is left unchecked under inprocess, by design
(`worker_imports._refuse_edited`)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from harness.errors import HarnessError
from harness.model_registry import MODELS, model_fingerprint
from harness.worker_imports import check_workers_know

MODEL = """
import uuid
from torch import nn
from harness.model_registry import register_model

RUN_ID = str(uuid.uuid4())


class Head(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, 2)


@register_model("edited_digest28", "a model whose file is edited after its import")
def edited(input_shape, num_classes):
    return Head(WIDTH)
"""


@pytest.fixture
def model(tmp_path, monkeypatch):
    """The module, imported; yields a function writing its file anew with `WIDTH` as the head's width."""
    path = tmp_path / "edited28.py"
    path.write_text(MODEL.replace("WIDTH", "16"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edited28", raising=False)
    importlib.invalidate_caches()
    importlib.import_module("edited28")
    yield lambda text: path.write_text(text, encoding="utf-8")
    MODELS.remove("edited_digest28")


def _check() -> None:
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="edited_digest28")
    check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=True, name="inprocess"))  # type: ignore[arg-type]


def test_a_model_edited_since_import_is_refused_under_inprocess(model) -> None:
    built_before = MODELS.get("edited_digest28").factory((1, 1, 16), 2).fc.in_features
    model(MODEL.replace("WIDTH", "256"))
    assert MODELS.get("edited_digest28").factory((1, 1, 16), 2).fc.in_features == built_before == 16
    with pytest.raises(HarnessError, match=r"edited28 was edited since this process imported it \(changed: edited\)"):
        _check()
    importlib.reload(sys.modules["edited28"])
    _check()
    assert MODELS.get("edited_digest28").factory((1, 1, 16), 2).fc.in_features == 256


def test_an_unedited_model_is_not_refused_and_nothing_is_spawned(model, monkeypatch) -> None:
    for _ in range(200):  # specialised (quickened) bytecode is not its code changed
        MODELS.get("edited_digest28").factory((1, 1, 16), 2)
    model("# a comment moves every line\n" + MODEL.replace("WIDTH", "16"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a process was started"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a process was started"))
    _check()  # RUN_ID, set anew in every process, is not checked here (no fresh process)
    assert len(model_fingerprint("edited_digest28")) == 16


def test_an_edit_of_a_class_it_names_is_refused(model) -> None:
    model(MODEL.replace("WIDTH", "16").replace("nn.Linear(width, 2)", "nn.Linear(width, 3)"))
    with pytest.raises(HarnessError, match=r"\(changed: Head.__init__\)"):
        _check()


def test_a_file_that_no_longer_compiles_is_refused(model) -> None:
    model(textwrap.dedent(MODEL.replace("WIDTH", "16")) + "\ndef broken(:\n")
    with pytest.raises(HarnessError, match=r"\(changed: <the file>\)"):
        _check()
