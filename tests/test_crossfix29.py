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


# attack on df1aeda (options: empty list items) --------------------------------------------------

@pytest.mark.parametrize(("options", "seeds", "rates", "tasks"), [
    ({"seeds": "5,"}, (5,), None, None), ({"seeds": "5, "}, (5,), None, None),
    ({"seeds": "5"}, (0, 1, 2, 3, 4), None, None),
    ({"noise_rates": "0.1,"}, None, (0.1,), None), ({"noise_rates": " 0.1 , "}, None, (0.1,), None),
    ({"tasks": "mislabeled,"}, None, None, ("mislabeled",)), ({"seeds": [0, 5]}, (0, 5), None, None),
])
def test_one_trailing_comma_is_the_list_before_it(options, seeds, rates, tasks) -> None:
    from harness.api import experiment_config

    cfg = experiment_config(**options)
    assert (seeds is None or cfg.seeds == seeds) and (rates is None or cfg.noise_rates == rates)
    assert tasks is None or cfg.tasks == tasks


@pytest.mark.parametrize(("options", "message"), [
    ({"proxies": ["csl", ""]}, "proxies has an empty item (['csl', '']: a value lost, e.g. an unset variable?); "
                               "drop it or give its value, e.g. proxies='csl,aum'"),
    ({"proxies": ["csl", " "]}, "proxies has an empty item (['csl', ' ']: "),
    ({"tasks": ["mislabeled", ""]}, "tasks has an empty item (['mislabeled', '']: "),
    ({"seeds": ["0", ""]}, "seeds has an empty item (['0', '']: "),
    ({"noise_rates": [0.1, ""]}, "noise_rates has an empty item ([0.1, '']: "),
    ({"seeds": " , "}, "seeds=' , ' has an empty item between commas"),
    ({"tasks": " , "}, "tasks=' , ' has an empty item between commas"),
])
def test_an_empty_item_of_a_python_list_is_refused_as_the_texts_is(options, message) -> None:
    """A list's '' (proxies=['csl', os.environ.get('P', '')]) ran csl alone once `csl,` was allowed."""
    from harness.api import experiment_config

    with pytest.raises(HarnessError) as info:
        experiment_config(**options)
    assert str(info.value).startswith(message)


def test_proxies_take_one_trailing_comma_and_name_an_empty_item() -> None:
    """--tasks mislabeled, is mislabeled; --proxies csl, said "cannot parse", and csl,,aum too."""
    assert parse_selection("csl,") == parse_selection("csl, ") == [("csl", {})]
    assert [p.label for p in resolve_proxies("curvature(n=2),")] == ["curvature(n=2)"]
    for bad in ("csl,,aum", ",csl", "csl,,", " , "):
        with pytest.raises(HarnessError) as info:
            parse_selection(bad)
        assert str(info.value) == (f"cannot parse --proxies {bad!r}: an empty item between commas (a value lost, e.g. "
                                   "an unset shell variable?); list the proxies with one comma between each, e.g. "
                                   "--proxies csl,aum")
    with pytest.raises(HarnessError, match="cannot parse --proxies 'csl,\\(\\)'; use e.g."):
        parse_selection("csl,()")


# attack on a6efe33 (a name claimed by a plugin that failed to load) --------------------------------

_GOOD = '''
import numpy as np
from proxies import Proxy, register_proxy


@register_proxy
class P(Proxy):
    name = "{name}"
    description = "d"
    citation = "{package}"

    def score(self, ctx):
        return np.zeros(1)
'''


class _Dist:
    def __init__(self, name: str) -> None:
        self.name, self.version = name, "1.0"


def _plugins(monkeypatch, tmp_path, modules: dict[str, str], points: list[tuple[str, str, str]]) -> list[str]:
    """Install `modules` (package.module -> source) and entry points (name, value, distribution);
    load them; the warnings' messages."""
    import importlib.metadata
    import sys

    from proxies import registry

    for module, text in modules.items():
        package, _, leaf = module.partition(".")
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / f"{leaf}.py").write_text(text)
        monkeypatch.delitem(sys.modules, package, raising=False)
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = registry.ENTRY_POINT_GROUP
    eps = [importlib.metadata.EntryPoint(n, v, group)._for(_Dist(d)) for n, v, d in points]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: eps if group == registry.ENTRY_POINT_GROUP
                        else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_plugins()
    return [str(w.message) for w in caught]


def test_one_distribution_found_twice_and_two_entry_points_to_one_class_load_quietly(monkeypatch, tmp_path,
                                                                                     fresh) -> None:
    messages = _plugins(monkeypatch, tmp_path, {"pa_x29.mod": _GOOD.format(name="foo_x29", package="pa_x29")},
                        [("foo_x29", "pa_x29.mod:P", "pa-x29"), ("foo_x29", "pa_x29.mod:P", "pa-x29"),
                         ("foo_x29_alias", "pa_x29.mod:P", "pa-x29")])
    assert messages == []
    assert [p.citation for p in resolve_proxies("foo_x29")] == ["pa_x29"]


def test_a_plugin_failing_for_its_own_reason_refuses_only_its_own_name(monkeypatch, tmp_path, fresh) -> None:
    messages = _plugins(monkeypatch, tmp_path, {"pa_x29.mod": "import no_such_dependency_x29\n",
                                                "pb_x29.mod": _GOOD.format(name="baz_x29", package="pb_x29")},
                        [("bar_x29", "pa_x29.mod:P", "pa-x29"), ("baz_x29", "pb_x29.mod:P", "pb-x29")])
    assert messages == ["proxy plugin 'bar_x29' (pa_x29.mod:P) failed to load: ModuleNotFoundError: No module named "
                        "'no_such_dependency_x29'"]
    assert [p.citation for p in resolve_proxies("baz_x29")] == ["pb_x29"]
    with pytest.raises(HarnessError, match="^proxy plugin 'bar_x29' .* failed to load: .*, so proxy 'bar_x29' is not "
                                           "available"):
        resolve_proxies("bar_x29")


def test_a_name_its_own_distribution_registered_is_no_second_plugin(monkeypatch, tmp_path, fresh) -> None:
    """One distribution, two top-level packages: its entry point qux_x29 fails (a missing optional
    dependency), another of its entry points registers qux_x29. It was refused as 'claimed by 2
    installed plugins ... uninstall all but one', of one installed distribution."""
    messages = _plugins(monkeypatch, tmp_path, {"qcore_x29.mod": "import no_such_dependency_x29\n",
                                                "qextra_x29.mod": _GOOD.format(name="qux_x29", package="qextra_x29")},
                        [("qux_x29", "qcore_x29.mod:P", "q-x29"), ("qux_x29_fast", "qextra_x29.mod:P", "q-x29")])
    assert not any("claimed by" in m for m in messages), messages
    assert [p.citation for p in resolve_proxies("qux_x29")] == ["qextra_x29"]


def test_another_distributions_class_under_a_failed_plugins_name_is_still_refused(monkeypatch, tmp_path,
                                                                                  fresh) -> None:
    """a6efe33's case, with distributions named: the other distribution's class is not served."""
    _plugins(monkeypatch, tmp_path, {"qcore_x29.mod": "import no_such_dependency_x29\n",
                                     "qextra_x29.mod": _GOOD.format(name="qux_x29", package="qextra_x29")},
             [("qux_x29", "qcore_x29.mod:P", "q-x29"), ("qux_x29_fast", "qextra_x29.mod:P", "other-x29")])
    with pytest.raises(HarnessError, match="proxy 'qux_x29' is claimed by 2 installed plugins"):
        resolve_proxies("qux_x29")
