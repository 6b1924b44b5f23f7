"""A recorder's key taken while its own module still runs (a class attribute or a value computed from
`RecorderRequest.of(...).key` in the module body, a module it imports in turn, an import or a reload) reads
none of what is defined below that line. It was kept for the class: the process's every later key missed
a helper defined below, so an edit of the helper reused the old code's arrays, and the driver's key differed
from a fresh worker's (recattack28; fails at 9c7e8d3)."""

from __future__ import annotations

import importlib
import sys

import pytest
from test_digest_attack27 import _module

from harness.recorders import RECORDERS, RecorderRequest, base

NAME = "rk28_tagged"
SOURCE = """
from harness.recorders import RecorderRequest, register_recorder
from harness.recorders.train_pass import TrainLoss


@register_recorder
class Tagged(TrainLoss):
    name = "rk28_tagged"

    def tag(self):
        return helper()


EARLY = RecorderRequest.of("rk28_tagged").key


def helper():
    return VALUE
"""


@pytest.fixture
def forget():
    yield
    RECORDERS.remove(NAME)
    base._DIGESTS.pop(NAME, None)


def _fresh_key() -> str:
    """The key a process that imported the module before its first use computes (a worker)."""
    held = base._DIGESTS.pop(NAME, None)
    try:
        return RecorderRequest.of(NAME).key
    finally:
        if held is not None:
            base._DIGESTS[NAME] = held


def test_a_key_used_in_its_modules_body_is_not_kept(tmp_path, monkeypatch, forget) -> None:
    keys = []
    for i, value in enumerate(("'a'", "'b'")):
        module = _module(tmp_path, monkeypatch, f"rk28_body{i}", SOURCE.replace("VALUE", value))
        assert module.EARLY.startswith(f"{NAME}@code-")
        key = RecorderRequest.of(NAME).key
        assert key == _fresh_key()
        keys.append(key)
        RECORDERS.remove(NAME)  # the next module registers the name anew
    assert keys[0] != keys[1]  # the helper's edit is in the key


def test_a_key_used_while_a_reload_runs_is_not_kept(tmp_path, monkeypatch, forget) -> None:
    module = _module(tmp_path, monkeypatch, "rk28_reload", SOURCE.replace("VALUE", "'a'"))
    before = RecorderRequest.of(NAME).key
    (tmp_path / "rk28_reload.py").write_text(SOURCE.replace("VALUE", "'b'"), encoding="utf-8")
    importlib.invalidate_caches()
    sys.modules["rk28_reload"] = module
    importlib.reload(module)
    after = RecorderRequest.of(NAME).key
    assert after != before
    assert after == _fresh_key()


def test_a_key_used_after_the_import_is_kept(tmp_path, monkeypatch, forget) -> None:
    _module(tmp_path, monkeypatch, "rk28_after", SOURCE.replace("VALUE", "'a'").replace("EARLY = ", "EARLY = 0 and "))
    key = RecorderRequest.of(NAME).key
    assert base._DIGESTS[NAME] == (RECORDERS[NAME], key.rsplit("@code-", 1)[1])


def test_the_example_plugin_recorder_key_is_f410fdc_s() -> None:
    """The key a fresh process's run looks arrays up by (with it, the class's digest f410fdc gave)."""
    import subprocess

    from _cli_process import ROOT

    script = ("import sys; sys.path.insert(0, 'examples/proxy_plugin'); import my_proxies.own; "
              "from harness.recorders import RecorderRequest; print(RecorderRequest.of('logit_grad_norm').key)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["logit_grad_norm@code-fcc34f8b7e61"]


def test_a_key_used_by_another_thread_while_the_module_imports_is_not_kept(tmp_path, monkeypatch, forget) -> None:
    threaded = SOURCE.replace('EARLY = RecorderRequest.of("rk28_tagged").key', (
        "import threading\nEARLY = []\nthread = threading.Thread(target=lambda: EARLY.append("
        "RecorderRequest.of('rk28_tagged').key))\nthread.start()\nthread.join()"))
    keys = []
    for i, value in enumerate(("'a'", "'b'")):
        module = _module(tmp_path, monkeypatch, f"rk28_thread{i}", threaded.replace("VALUE", value))
        assert len(module.EARLY) == 1
        keys.append(RecorderRequest.of(NAME).key)
        assert keys[-1] == _fresh_key()
        RECORDERS.remove(NAME)
    assert keys[0] != keys[1]


def test_a_class_put_back_in_the_registry_gets_its_own_key_back(tmp_path, monkeypatch, forget) -> None:
    """A plugin's half import undone (`registry._forget_half_imported`) registers the former class again:
    the key follows the class registered, never the one that replaced it for a while (pin; passes at 9c7e8d3)."""
    first = _module(tmp_path, monkeypatch, "rk28_first", SOURCE.replace("VALUE", "'a'"))
    key = RecorderRequest.of(NAME).key
    second = _module(tmp_path, monkeypatch, "rk28_second", SOURCE.replace("VALUE", "'b'").replace(
        "@register_recorder", "").replace("EARLY = ", "EARLY = 0 and "))
    RECORDERS.register(NAME, second.Tagged, replace=True)
    replaced = RecorderRequest.of(NAME).key
    RECORDERS.register(NAME, first.Tagged, replace=True)
    assert replaced != key and RecorderRequest.of(NAME).key == key


METACLASS = """
from harness.recorders import register_recorder
from harness.recorders.train_pass import TrainLoss


class Unhashable(type(TrainLoss)):
    def __eq__(cls, other):
        return cls is other

    __hash__ = None


@register_recorder
class Tagged(TrainLoss, metaclass=Unhashable):
    name = "rk28_tagged"
"""


def test_inprocess_takes_a_recorder_whose_metaclass_makes_it_unhashable(tmp_path, monkeypatch, forget) -> None:
    """Its key is taken (`_DIGESTS` compares classes by identity), but the inprocess edited-since-import check,
    run on recorders since 9c7e8d3, raised TypeError out of the experiment."""
    from types import SimpleNamespace

    from harness.worker_imports import check_workers_know

    _module(tmp_path, monkeypatch, "rk28_meta", METACLASS)
    assert RecorderRequest.of(NAME).key.startswith(f"{NAME}@code-")
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="mlp")
    check_workers_know([(spec, {RecorderRequest.of(NAME)})],  # type: ignore[arg-type]
                       SimpleNamespace(runs_jobs_here=True, name="inprocess"))  # type: ignore[arg-type]
