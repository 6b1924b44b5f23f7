"""An unknown proxy's error on odd classes in the process (attack23)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from harness.errors import HarnessError
from proxies.base import Proxy
from proxies.registry import make_proxy


def test_a_proxy_subclass_whose_name_is_no_str_does_not_break_the_unknown_proxy_error() -> None:
    """The search for a defined but unregistered class compared every subclass's `name` with ==: a
    class whose name is an array (a half-written one, a base class with a computed attribute) made
    every unknown proxy a ValueError traceback."""

    class HalfWritten(Proxy):
        name = np.array(["a", "b"])

    with pytest.raises(HarnessError, match="unknown proxy 'nosuch_attack23'"):
        make_proxy("nosuch_attack23")
    assert HalfWritten.name.shape == (2,)  # kept alive until after the search
    del HalfWritten
    gc.collect()  # out of Proxy.__subclasses__() for the tests after this one
