"""A proxy plugin whose module registers its class and then fails further down (an import of a missing
package, `sys.exit()` or `parse_args()` at the bottom, `pytest.skip` at its top level). Before, the
class registered above the failing line stayed registered: `--proxies all` scored a proxy of a
half-run module (its helpers below the failing line missing, a NameError after training) and the
warning said that selecting its name ran "late_attackb26.Late, not this plugin" -- the plugin itself.
A BaseException that is no Exception ended memprox with a traceback, and the module's prints at import
went into memprox's report on stdout."""

from __future__ import annotations

import warnings

import pytest
from _plugin_entry import install_plugin

from harness.errors import HarnessError
from proxies import resolve_proxies

MODULE = '''
import sys

import numpy as np
from proxies import Proxy, register_proxy

print("plugin says hello")


@register_proxy
class Late(Proxy):
    name, description, citation = "late_attackb26", "d", "c"

    def score(self, ctx):
        return helper(ctx)

{bottom}


def helper(ctx):
    return np.zeros(len(ctx.labels))
'''


def _install(monkeypatch: pytest.MonkeyPatch, tmp_path, module: str, bottom: str, attr: str = "Late") -> None:
    install_plugin(monkeypatch, tmp_path, module, MODULE.format(bottom=bottom), "late_attackb26", attr)


class Halt(BaseException):
    """Not an Exception, as pytest's skip at a module's top level."""


@pytest.mark.parametrize(("module", "bottom", "said"), [
    ("missing_attackb26", "import no_such_module_attackb26",
     "failed to load: ModuleNotFoundError: No module named 'no_such_module_attackb26'"),
    ("exit_attackb26", "sys.exit(3)", "exited while imported (SystemExit: 3;"),
    ("halt_attackb26", "from tests.test_plugins_attackb26 import Halt\nraise Halt('stop here')",
     "failed to load: Halt: stop here"),
])
def test_a_plugin_failing_below_its_registered_class_is_left_out(monkeypatch, tmp_path, fresh, capsys,
                                                                 module: str, bottom: str, said: str) -> None:
    _install(monkeypatch, tmp_path, module, bottom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = [p.label for p in resolve_proxies("all")]
    assert "csl" in labels and "late_attackb26" not in labels
    assert "late_attackb26" not in fresh
    messages = [str(w.message) for w in caught if "late_attackb26" in str(w.message)]
    assert len(messages) == 1 and said in messages[0]
    assert "not this plugin" not in messages[0]  # nothing else holds the name
    with pytest.raises(HarnessError, match=r"so proxy 'late_attackb26' is not available"):
        resolve_proxies("late_attackb26")
    out, err = capsys.readouterr()
    assert "plugin says hello" not in out and "plugin says hello" in err


def test_a_plugin_that_imports_cleanly_keeps_its_class_and_prints_to_stderr(monkeypatch, tmp_path, fresh,
                                                                            capsys) -> None:
    _install(monkeypatch, tmp_path, "clean_attackb26", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound plugin: not a word
        assert [p.label for p in resolve_proxies("late_attackb26")] == ["late_attackb26"]
    assert "late_attackb26" in [p.label for p in resolve_proxies("all")]
    out, err = capsys.readouterr()
    assert out == "" and "plugin says hello" in err


def test_a_keyboard_interrupt_while_a_plugin_imports_stops_memprox(monkeypatch, tmp_path, fresh) -> None:
    _install(monkeypatch, tmp_path, "interrupt_attackb26", "raise KeyboardInterrupt")
    with pytest.raises(KeyboardInterrupt):
        resolve_proxies("all")
    assert "late_attackb26" not in fresh


def test_an_entry_point_naming_a_class_its_module_lacks_says_the_module_registered_the_name(monkeypatch, tmp_path,
                                                                                            fresh) -> None:
    """The module imported whole and registered its class; the entry point's typo failed the load. The
    warning said selecting the name ran 'typo_attackb26.Late, not this plugin': it is the plugin's."""
    _install(monkeypatch, tmp_path, "typo_attackb26", "", attr="Lat")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [p.label for p in resolve_proxies("late_attackb26")] == ["late_attackb26"]
    messages = [str(w.message) for w in caught if "late_attackb26" in str(w.message)]
    assert len(messages) == 1 and "failed to load: AttributeError" in messages[0]
    assert messages[0].endswith("; selecting proxy 'late_attackb26' runs typo_attackb26.Late, which its module "
                                "registered")
