"""`--proxies all` with a `--proxy-arg` that turns a proxy's defaults into one of its listed
variants (`learning_time.rule=count`): the two entries are one proxy, scored once under one column,
and a warning now says so (before: 15 proxies instead of 16, and no word of the missing column).
A variant that equals the defaults is refused when its class registers (`all` would drop it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from proxies import Proxy, registry, resolve_proxies


def _labels(params: dict) -> tuple[list[str], list[str]]:
    """The labels `--proxies all` resolves to with `params`, and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = [p.label for p in resolve_proxies("all", params)]
    return labels, [str(w.message) for w in caught]


def test_a_proxy_arg_that_makes_the_default_its_variant_says_so_in_one_line() -> None:
    plain, _ = _labels({})
    labels, said = _labels({"learning_time": {"rule": "count"}})
    assert len(labels) == len(plain) - 1
    assert [label for label in labels if label.startswith("learning_time")] == ["learning_time(rule=count)"]
    merged = [line for line in said if "learning_time" in line]
    assert merged == ["--proxy-arg learning_time.rule=count makes learning_time the same as its variant "
                      "learning_time(rule=count), which --proxies all runs beside it: one column, "
                      "learning_time(rule=count), not two (without learning_time.rule=count, both are scored)"]


def test_the_line_names_the_variant_s_own_parameter_among_several_given() -> None:
    labels, said = _labels({"learning_time": {"power": 1, "rule": "count"}})
    assert [label for label in labels if label.startswith("learning_time")] == ["learning_time(power=1,rule=count)"]
    merged = [line for line in said if "learning_time" in line]
    assert len(merged) == 1
    assert merged[0].startswith("--proxy-arg learning_time.rule=count makes learning_time the same as its variant "
                                "learning_time(power=1,rule=count)")


@pytest.mark.parametrize("params", [{}, {"learning_time": {"power": 1}}, {"learning_time": {"rule": "first"}}])
def test_no_line_where_both_entries_stay_apart(params: dict) -> None:
    labels, said = _labels(params)
    assert sum(label.startswith("learning_time") for label in labels) == 2
    assert not [line for line in said if "learning_time" in line]


def _proxy_class(**attributes) -> type[Proxy]:
    body = {"name": "variants_research26", "description": "d", "citation": "c",
            "score": lambda self, ctx: np.zeros(1), **attributes}
    return type("VariantsProxy", (Proxy,), body)


@pytest.mark.parametrize("variant", [{}, {"k": 1}, {"k": 1.0}])
def test_a_variant_equal_to_the_defaults_is_refused_when_registered(fresh, variant: dict) -> None:
    cls = _proxy_class(defaults={"k": 1}, variants_in_all=(variant,))
    with pytest.raises(TypeError, match=r"the `variants_in_all` entry .* is its defaults, which `--proxies all` "
                                        r"runs anyway"):
        registry.register_proxy(cls)
    assert cls.name not in fresh


def test_a_variant_that_differs_still_registers_and_runs_beside_the_defaults(fresh) -> None:
    cls = _proxy_class(defaults={"k": 1}, variants_in_all=({"k": 2},))
    assert registry.register_proxy(cls) is cls
    labels = [p.label for p in resolve_proxies("all") if p.name == cls.name]
    assert labels == ["variants_research26", "variants_research26(k=2)"]
