"""Session 30's leftover in `_selects_other` (a6efe33, ada068b): one distribution, two top-level packages, its
entry point 'qux_x30' failing (a missing optional dependency) while another of its entry points registers the
class named 'qux_x30'. What the user read depended on the entry points' alphabetical order: loaded first, the
failure said nothing of what 'qux_x30' selects and the alias got "name the entry point 'qux_x30' too" (the
failed one's name); loaded last, "runs qextra_x30.mod.P, not this plugin", as of another package's class. Now
both orders say the same: the name runs the class its own distribution's other entry point registers."""

from __future__ import annotations

import pytest

from proxies.registry import resolve_proxies
from tests.test_crossfix29 import _GOOD, _plugins

FAILED = ("proxy plugin 'qux_x30' (qcore_x30.mod:P) failed to load: ModuleNotFoundError: No module named "
          "'no_such_dependency_x30'")


@pytest.mark.parametrize("alias", ["qux_x30_fast", "a_qux_x30"], ids=["failed-one-first", "failed-one-last"])
def test_a_name_its_own_distribution_registered_is_said_once_in_either_order(monkeypatch, tmp_path, fresh,
                                                                             alias) -> None:
    messages = _plugins(monkeypatch, tmp_path, {"qcore_x30.mod": "import no_such_dependency_x30\n",
                                                "qextra_x30.mod": _GOOD.format(name="qux_x30", package="qextra_x30")},
                        [("qux_x30", "qcore_x30.mod:P", "q-x30"), (alias, "qextra_x30.mod:P", "q-x30")])
    assert messages == [FAILED, f"proxy 'qux_x30' selects qextra_x30.mod.P, which entry point {alias!r} "
                                "(qextra_x30.mod:P) of the same distribution (q-x30) registers: its entry point "
                                "'qux_x30' (qcore_x30.mod:P) failed to load (above), so 'qux_x30' runs that class "
                                "instead"]
    assert [p.citation for p in resolve_proxies("qux_x30")] == ["qextra_x30"]


def test_another_distributions_class_is_still_not_this_plugin(monkeypatch, tmp_path, fresh) -> None:
    """Loaded before the failed one, another distribution's class: refused as claimed twice, as before."""
    messages = _plugins(monkeypatch, tmp_path, {"qcore_x30.mod": "import no_such_dependency_x30\n",
                                                "qextra_x30.mod": _GOOD.format(name="qux_x30", package="qextra_x30")},
                        [("qux_x30", "qcore_x30.mod:P", "q-x30"), ("a_qux_x30", "qextra_x30.mod:P", "other-x30")])
    assert messages[0] == FAILED + "; selecting proxy 'qux_x30' runs qextra_x30.mod.P, not this plugin"
    assert any("is claimed by installed plugin 'qux_x30'" in m for m in messages[1:])
