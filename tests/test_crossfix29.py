"""Small fixes other helpers of session 29 found outside their files (crossfix29): bf16 on the CPU
warned about, proxy parameters read as the docs say (a leading zero, an empty item, True/False and
quoted text named in the error), "did you mean" for a mistyped model or dataset, and a leaderboard
header that no longer reads "over 0-1 seed(s)" when a proxy has no value on any seed."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from harness.errors import HarnessError
from harness.leaderboard import aggregate, markdown
from harness.values import parse_key_values
from proxies.base import Proxy
from proxies.registry import parse_selection, resolve_proxies
from tests.conftest import TINY_RECIPE

BF16 = "bf16 on the CPU is about 8x slower than fp32 here; pass --precision fp32"


def _bf16_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if BF16 in str(w.message)]


# 1. bf16 on the CPU -----------------------------------------------------------------------------

def test_bf16_on_the_cpu_warns_once_before_training(make_config) -> None:
    from harness.experiment import Experiment

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = Experiment(make_config(recipe=replace(TINY_RECIPE, precision="bf16"), precision="bf16"))
    assert len(_bf16_warnings(caught)) == 1
    assert experiment.device.type == "cpu" and experiment.cfg.recipe.precision == "bf16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Experiment(make_config())  # fp32: nothing to say
    assert _bf16_warnings(caught) == []


def test_the_gpu_preset_on_the_cpu_warns_and_not_on_a_gpu_device(make_config) -> None:
    from harness.api import build_config
    from harness.experiment import Experiment
    from harness.planner import Planner

    assert build_config(preset="gpu", dataset="digits", device="cpu").recipe.precision == "bf16"
    cfg = make_config(recipe=replace(TINY_RECIPE, precision="bf16"), precision="bf16")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        experiment = Experiment(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Planner(cfg, experiment.source, experiment.dataset, torch.device("cuda"), experiment.store)
    assert _bf16_warnings(caught) == []  # on a GPU bf16 is what the gpu preset is for


# 2. proxy selections: a leading zero, an empty item ---------------------------------------------

@pytest.mark.parametrize(("selection", "args"), [("curvature(n=02)", None),
                                                 ("curvature", parse_key_values(["curvature.n=02"], "--proxy-arg"))])
def test_a_leading_zero_says_python_cannot_read_it(selection, args) -> None:
    with pytest.raises(HarnessError) as info:
        resolve_proxies(selection, args)
    assert str(info.value) == ("curvature.n must be an integer >= 1 (got '02') (Python reads no integer with a "
                               "leading zero: write 2)")


def test_a_leading_zero_for_a_number_parameter_too() -> None:
    with pytest.raises(HarnessError, match=r"\(got '-007'\) \(Python reads no integer with a leading zero: write -7\)"):
        resolve_proxies("curvature(h=-007)")


@pytest.mark.parametrize(("selection", "item"), [("curvature(n=2,,h=0.1)", 2), ("curvature(,n=2)", 1),
                                                 ("curvature(n=2, ,h=0.1)", 2), ("curvature(,)", 1)])
def test_an_empty_parameter_is_refused_naming_it(selection, item) -> None:
    with pytest.raises(HarnessError) as info:
        parse_selection(selection)
    assert str(info.value) == (f"{selection} has an empty parameter (item {item}); remove the extra comma or give "
                               "it KEY=VALUE")


def test_one_trailing_comma_and_empty_parentheses_stay_allowed() -> None:
    assert parse_selection("curvature(n=2,h=0.1,)") == [("curvature", {"n": 2, "h": 0.1})]
    assert parse_selection("csl( ),curvature()") == [("csl", {}), ("curvature", {})]
    assert [p.label for p in resolve_proxies("curvature(n=2,)")] == ["curvature(n=2)"]


# 3. a value of another kind than its default: how to write it ------------------------------------

class _Typed(Proxy):
    name = "typed_crossfix29"
    description = "a proxy with a True/False and a text parameter, no validate"
    citation = "none"
    defaults = {"flag": False, "mode": "a", "k": 3}

    def score(self, ctx):
        return np.zeros(1)


@pytest.mark.parametrize(("params", "message"), [
    ({"flag": "true"}, "typed_crossfix29.flag must be True or False, as its default False is (got str 'true') "
                       "(write True or False, capitalised)"),
    ({"flag": 1}, "typed_crossfix29.flag must be True or False, as its default False is (got int 1) "
                  "(write True or False, capitalised)"),
    ({"mode": 3}, "typed_crossfix29.mode must be a string, as its default 'a' is (got int 3); text that reads as a "
                  "number needs Python quotes inside the shell's: --proxy-arg \"typed_crossfix29.mode='3'\" or "
                  "--proxies \"typed_crossfix29(mode='3')\""),
    ({"k": "03"}, "typed_crossfix29.k must be an integer, as its default 3 is (got str '03') (Python reads no "
                  "integer with a leading zero: write 3)"),
    ({"k": 2.5}, "typed_crossfix29.k must be an integer, as its default 3 is (got float 2.5)"),
])
def test_a_value_unlike_its_default_says_how_to_write_it(params, message) -> None:
    with pytest.raises(HarnessError) as info:
        _Typed(**params)
    assert str(info.value) == message


# 4. did you mean, for a model and a dataset -----------------------------------------------------

@pytest.mark.parametrize(("model", "close"), [("MLP", "mlp"), ("resnet-18", "resnet18")])
def test_an_unknown_model_names_the_closest(make_config, model, close) -> None:
    from harness.experiment import Experiment

    with pytest.raises(HarnessError) as info:
        Experiment(make_config(model=model))
    assert str(info.value).startswith(f"unknown model {model!r} (did you mean {close!r}?); valid models: ")


@pytest.mark.parametrize(("name", "close"), [("cifar-10", "cifar10"), ("fashion_mnist", "fashion-mnist"),
                                             ("CIFAR10", "cifar10")])
def test_an_unknown_dataset_names_the_closest(name, close) -> None:
    from harness.datasets import load_dataset

    with pytest.raises(HarnessError) as info:
        load_dataset(name)
    assert str(info.value).startswith(f"unknown dataset {name!r} (did you mean {close!r}?); valid names: digits,")


def test_a_path_keeps_its_own_hint_alone() -> None:
    from harness.datasets import load_dataset

    with pytest.raises(HarnessError) as info:
        load_dataset("mine.npz")
    assert "(did you mean" not in str(info.value)
    assert str(info.value).endswith("; did you mean --dataset npz:mine.npz?")


# 5. the leaderboard's seed count ----------------------------------------------------------------

def _raw(values: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"task": "mislabeled", "dataset": "digits", "model": "mlp", "setting": "noise=0.1",
                          "seed": seed, "proxy": proxy, "metric": "auroc", "value": v}
                         for proxy, pair in values.items() for seed, v in enumerate(pair)])


def test_a_proxy_nan_on_every_seed_is_said_to_have_no_value() -> None:
    md = markdown(aggregate(_raw({"csl": (0.9, 0.8), "odd": (np.nan, np.nan)})))
    assert "### mislabeled: auroc (mean ± std over 2 seed(s); no value: no seed gave one)" in md
    assert "0-2" not in md and "nan" not in md
    assert "| odd     | no value" in md
    assert "| csl     | 0.850 ± 0.071" in md


def test_a_table_where_no_seed_gave_a_value_says_so() -> None:
    md = markdown(aggregate(_raw({"odd": (np.nan, np.nan)})))
    assert md.startswith("### mislabeled: auroc (mean ± std over no seed: no seed gave a value)")
    assert "seed(s)" not in md


def test_seed_counts_that_differ_are_a_range() -> None:
    md = markdown(aggregate(_raw({"csl": (0.9, 0.8), "half": (0.7, np.nan)})))
    assert "(mean ± std over 1-2 seed(s))" in md
