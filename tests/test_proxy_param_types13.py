"""A plugin proxy without a `validate` of its own gets its parameters checked against its defaults'
types before training: `fraction="0.3"` failed only in `score`, after training, as a TypeError."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from proxies import Proxy


class Plain(Proxy):  # not registered: a test must not add to the registry other files list
    name, description, citation = "plain_probe", "d", "c"
    defaults = {"fraction": 0.5, "k": 3, "flag": False, "mode": "a", "anything": None}

    def score(self, ctx):
        return np.zeros(1)


@pytest.mark.parametrize(("params", "message"), [
    ({"fraction": "0.3"}, "plain_probe.fraction must be a number, as its default 0.5 is (got str '0.3')"),
    ({"k": 2.0}, "plain_probe.k must be an integer, as its default 3 is (got float 2.0)"),
    ({"k": True}, "plain_probe.k must be an integer, as its default 3 is (got bool True)"),
    ({"flag": 1}, "plain_probe.flag must be True or False, as its default False is (got int 1) "
                    "(write True or False, capitalised)"),
    ({"mode": 3}, "plain_probe.mode must be a string, as its default 'a' is (got int 3); text that reads "
                    "as a number needs Python quotes inside the shell's: --proxy-arg \"plain_probe.mode='3'\" or "
                    "--proxies \"plain_probe(mode='3')\""),
])
def test_a_value_unlike_its_default_is_refused(params: dict, message: str) -> None:
    with pytest.raises(HarnessError) as raised:
        Plain(**params)
    assert str(raised.value) == message


def test_values_like_their_defaults_are_kept_and_an_int_for_a_float_is_one_label() -> None:
    proxy = Plain(fraction=1, k=5, flag=True, mode="b", anything=[1, 2])
    assert proxy.params["fraction"] == 1.0 and isinstance(proxy.params["fraction"], float)
    assert proxy.label == Plain(fraction=1.0, k=5, flag=True, mode="b", anything=[1, 2]).label


def test_a_proxy_with_its_own_validate_keeps_its_own_checks() -> None:
    class Own(Plain):
        def validate(self) -> None:
            pass  # accepts anything, as its author decided

    assert Own(fraction="0.3").params["fraction"] == "0.3"
