"""The notice that stored runs train again (e44a422), attacked (attack24): its way out must be one
a user can take. With `--proxies all` there is nothing to "drop final_loss from", so the way names
the rest to paste (quoted: labels such as `learning_time(rule=count)` hold parentheses); a way that
drops every selected proxy is none (no experiment runs without one); the API words it as keywords."""

from __future__ import annotations

import re
import shlex
import warnings
from collections.abc import Callable

import pytest

from harness.api_wording import as_keywords
from harness.experiment import Experiment
from proxies import resolve_proxies

NOTICE = "lack recorder(s)"


@pytest.fixture
def tiny(make_config) -> Callable:
    """300 digits, one epoch, one seed, in this process; one stored run of csl alone."""
    make = lambda **kw: make_config(**{"subset": 300, "epochs": 1, "out": None, **kw})  # noqa: E731
    Experiment(make(proxies="csl")).run()
    return make


def _notices(cfg) -> list[str]:
    """The notices said while planning what to train (nothing trains: `pending` only)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Experiment(cfg).pending()
    return [str(w.message) for w in caught if NOTICE in str(w.message)]


def test_all_gets_the_rest_of_its_proxies_to_paste(tiny) -> None:
    (line,) = _notices(tiny(proxies="all"))
    found = re.search(r"; to avoid it, drop (.+) from --proxies, e\.g\. (--proxies '[^']+')$", line)
    assert found is not None, line
    dropped = found.group(1).split(", ")
    every = [p.label for p in resolve_proxies("all")]
    words = shlex.split(found.group(2))  # what a shell passes: one argument, parentheses and all
    assert words[0] == "--proxies" and len(words) == 2
    assert words[1].split(",") == [label for label in every if label not in dropped]
    assert "final_loss" in dropped and "csl" in words[1].split(",")
    assert "learning_time(rule=count)" in words[1].split(",") + dropped
    assert [p.label for p in resolve_proxies(words[1])] == words[1].split(",")  # the harness takes it
    assert f"proxies='{words[1]}'" in as_keywords(line) and "--proxies" not in as_keywords(line)  # the API's words


def test_a_list_keeps_its_advice_and_a_proxy_arg_gets_no_labels_to_paste(tiny) -> None:
    (listed,) = _notices(tiny(proxies="csl,final_loss"))
    assert listed.endswith("; to avoid it, drop final_loss from --proxies")
    (with_arg,) = _notices(tiny(proxies="all", proxy_args={"curvature": {"n": 2}}))
    assert re.search(r"; to avoid it, drop [^;']+ from --proxies$", with_arg), with_arg  # curvature(n=2) twice: refused


def test_dropping_every_selected_proxy_is_no_way(tiny) -> None:
    (line,) = _notices(tiny(proxies="final_loss"))
    assert line.startswith("1 stored run(s) (digits noise=0.1 mlp seed0) lack recorder(s) eval_pass[epochs=last] "
                           "(asked by final_loss): ")
    assert "to avoid it" not in line
