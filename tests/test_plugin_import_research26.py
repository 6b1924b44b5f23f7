"""A proxy plugin whose module runs a script when imported (a research script turned into a module,
with `parse_args()` or `sys.exit()` at its top level). Before, its SystemExit passed the loader's
`except Exception` and ended memprox itself: `--proxies all` (and `list`) stopped with exit 2 and
argparse's "unrecognized arguments: run --proxies all ...", which read as memprox's own usage
error, naming no plugin. Now it is a plugin that failed to load, like one that raises."""

from __future__ import annotations

import sys
import warnings

import pytest
from _plugin_entry import install_plugin

from harness.errors import HarnessError
from proxies import resolve_proxies

SCRIPT = '''
import argparse
import sys

import numpy as np
from proxies import Proxy, register_proxy

{top_level}


@register_proxy
class Scripted(Proxy):
    name, description, citation = "scripted_research26", "d", "c"

    def score(self, ctx):
        return np.zeros(len(ctx.labels))
'''


def _install(monkeypatch, tmp_path, module: str, top_level: str) -> None:
    install_plugin(monkeypatch, tmp_path, module, SCRIPT.format(top_level=top_level), "scripted_research26", "Scripted")


@pytest.mark.parametrize(("module", "top_level", "code"), [
    ("argparse_research26", "args = argparse.ArgumentParser().parse_args()", 2),
    ("exit_research26", "sys.exit(3)", 3),
])
def test_a_plugin_that_exits_while_imported_is_left_out_naming_it(monkeypatch, tmp_path, fresh, capsys,
                                                                   module: str, top_level: str, code: int) -> None:
    _install(monkeypatch, tmp_path, module, top_level)
    monkeypatch.setattr(sys, "argv", ["memprox", "run", "--proxies", "all"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = [p.label for p in resolve_proxies("all")]  # before: SystemExit here
    assert "csl" in labels and "scripted_research26" not in labels
    said = [str(w.message) for w in caught if "scripted_research26" in str(w.message)]
    assert said == [f"proxy plugin 'scripted_research26' ({module}:Scripted) exited while imported (SystemExit: "
                    f"{code}; any lines just above are its own, e.g. argparse's usage): a module must not run a "
                    "script when imported; put that code under `if __name__ == \"__main__\":`"]
    with pytest.raises(HarnessError, match=r"exited while imported .* so proxy 'scripted_research26' is not "
                                           "available"):
        resolve_proxies("csl,scripted_research26")
    capsys.readouterr()  # argparse's own usage lines, which it printed before exiting
