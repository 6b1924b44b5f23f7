"""Proxy plugins as a user writes them: a flawed class is refused when its module is imported (not
after training), a notebook cell run again redefines its proxy, an entry point named unlike its
class says which name selects it, and `--proxies` reads whitespace and near-miss names sensibly."""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from proxies import Proxy, registry, resolve_proxies

DEFINITION = '''
@register_proxy
class LateLoss(Proxy):
    name = "late_loss_audit"
    description = "mean training-pass loss"
    citation = "you, 2026"
    recorders = (RecorderRequest.of("train_loss"),)

    def score(self, ctx):
        return np.zeros(len(ctx.labels)) + VERSION
'''


def _proxy_class(**attributes) -> type[Proxy]:
    body = {"name": "audit_proxy", "description": "d", "citation": "c", "score": lambda self, ctx: np.zeros(1),
            **attributes}
    return type("AuditProxy", (Proxy,), body)


def test_running_a_notebook_cell_again_redefines_its_proxy(fresh) -> None:
    """Before: the second run raised 'already registered ...; pass replace=True', which the
    decorator does not take: the only way on was restarting the kernel."""
    namespace = {"register_proxy": registry.register_proxy, "Proxy": Proxy, "RecorderRequest": RecorderRequest,
                 "np": np, "__name__": "__main__"}
    for version in (1, 2):
        exec(DEFINITION, {**namespace, "VERSION": version})
        assert fresh["late_loss_audit"].score(None, types.SimpleNamespace(labels=[0, 1])).tolist() == [version] * 2


def test_a_different_class_under_a_taken_name_names_both_and_the_fix(fresh) -> None:
    with pytest.raises(ValueError, match=r"proxy 'csl' is already registered by proxies\.csl\.CSL; give "
                                         r".*AuditProxy another name"):
        registry.register_proxy(_proxy_class(name="csl"))
    assert fresh["csl"].__module__ == "proxies.csl"


@pytest.mark.parametrize(("attributes", "needle"), [
    ({"name": "late loss"}, "'late loss', which --proxies cannot select"),
    ({"name": "my.proxy"}, "'my.proxy', which --proxies cannot select"),  # --proxy-arg my.proxy.k=1 splits at '.'
    ({"name": "LateLoss"}, "'LateLoss', which --proxies cannot select"),
    ({"name": "csl(x)"}, "cannot select"),
    ({"score": Proxy.score}, "must implement `score"),
    ({"recorders": RecorderRequest.of("train_loss")}, "`recorders` must be a tuple of RecorderRequest"),
    ({"defaults": ["k"]}, "`defaults` must be a dict"),
    ({"defaults": {"k": 1}, "variants_in_all": ({"kk": 2},)}, "`variants_in_all` entry must be a dict of parameters"),
])
def test_a_flawed_proxy_class_is_refused_when_registered(fresh, attributes: dict, needle: str) -> None:
    """Before: each registered; the bad names could not be selected, the rest failed (with a
    traceback) only after training, or at planning."""
    cls = _proxy_class(**attributes)
    with pytest.raises(TypeError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        registry.register_proxy(cls)
    assert cls.name not in fresh


def test_proxies_with_parameters_and_recorder_properties_still_register(fresh) -> None:
    cls = _proxy_class(name="audit-ok_2", defaults={"k": 1}, variants_in_all=({"k": 2},),
                       recorders=property(lambda self: (RecorderRequest.of("train_loss"),)))
    assert registry.register_proxy(cls) is cls and fresh["audit-ok_2"] is cls


def _install(monkeypatch, entry_name: str, cls: type[Proxy]) -> None:
    module = types.ModuleType("audit_plugin_module")
    module.Plugin = cls
    monkeypatch.setitem(sys.modules, "audit_plugin_module", module)
    ep = importlib.metadata.EntryPoint(entry_name, "audit_plugin_module:Plugin", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


def test_an_entry_point_named_unlike_its_class_says_which_name_selects_it(monkeypatch, fresh) -> None:
    """Before: registered under the class's name without a word; --proxies ENTRY_NAME was unknown."""
    _install(monkeypatch, "late_loss", _proxy_class(name="other_name"))
    with pytest.warns(UserWarning, match="registers proxy 'other_name': select it by that name"):
        registry.load_plugins()
    assert "other_name" in fresh and "late_loss" not in fresh


def test_a_plugin_named_like_its_entry_point_registers_without_a_warning(monkeypatch, fresh) -> None:
    _install(monkeypatch, "audit_proxy", _proxy_class())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.load_plugins()
    assert [p.label for p in resolve_proxies("csl,audit_proxy")] == ["csl", "audit_proxy"]


def test_an_invalid_plugin_warns_that_it_is_ignored(monkeypatch, fresh) -> None:
    _install(monkeypatch, "Late Loss", _proxy_class(name="Late Loss"))
    with pytest.warns(UserWarning, match=r"'Late Loss'.*cannot select.*; ignored"):
        registry.load_plugins()
    assert "Late Loss" not in fresh


@pytest.mark.parametrize(("selection", "labels"), [
    ("csl\n", ["csl"]),  # a value read from a file
    ("csl\t,aum", ["csl", "aum"]),
])
def test_any_whitespace_between_items_is_ignored(selection: str, labels: list[str]) -> None:
    """Before: 'cannot parse' (only spaces were ignored, though the pattern skips any whitespace)."""
    assert [p.label for p in resolve_proxies(selection)] == labels


def test_empty_parentheses_are_the_defaults_and_stray_ones_are_refused() -> None:
    assert [p.label for p in resolve_proxies("csl(), aum")] == ["csl", "aum"]
    for bad in ("csl()()", "csl,()", "csl("):
        with pytest.raises(HarnessError, match="cannot parse --proxies"):
            resolve_proxies(bad)


@pytest.mark.parametrize(("selection", "close"), [("CSL", "csl"), ("curvatur", "curvature")])
def test_an_unknown_proxy_suggests_the_close_name(selection: str, close: str) -> None:
    with pytest.raises(HarnessError, match=rf"unknown proxy '{selection}' \(did you mean '{close}'\?\)"):
        resolve_proxies(selection)


@pytest.mark.parametrize("name", ["my task", "my.task", "MyTask", ""])
def test_a_task_name_tasks_cannot_select_is_refused_when_registered(name: str) -> None:
    """`--tasks a,b` and `--task-arg TASK.PARAM=V` could never select these names."""
    from harness.tasks.base import TASKS, Task, register_task

    with pytest.raises(TypeError, match="task Odd"):
        register_task(type("Odd", (Task,), {"name": name, "description": "d"}))
    assert name not in TASKS


def test_running_a_cell_that_registers_a_dataset_again_replaces_it() -> None:
    """The notebook rule holds for loaders (registered as a function wrapped in an entry), not only
    for proxy classes; another function under the taken name is still an error naming both."""
    from harness.datasets import DATASETS, register_dataset

    cell = "@register_dataset('audit_cell_data', 'd')\ndef {}(request):\n    raise NotImplementedError\n"
    try:
        for _ in range(2):
            exec(compile(cell.format("load"), "<cell>", "exec"), {"register_dataset": register_dataset,
                                                                  "__name__": "__main__"})
        with pytest.raises(ValueError, match=r"registered by __main__\.load; give __main__\.other another name"):
            exec(compile(cell.format("other"), "<cell>", "exec"), {"register_dataset": register_dataset,
                                                                   "__name__": "__main__"})
    finally:
        DATASETS._items.pop("audit_cell_data", None)
